"""The citizens' pages in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium, against a real `broadcaster serve` and gateway simulator (the `stack`
fixture). A citizen signs up in Danish and in English, reads the code from the SMS the simulator
received, confirms, and the API shows the subscriber active for the postal code; a wrong code, an
expired code, an invalid number and a missing consent each show their message at their field;
leaving works (its code page switching language and back); an unknown page is a page in its
language; axe-core finds no serious or critical violation on any page, and no page scrolls
sideways on a 360-px-wide screen. Screenshots of every page at 360 px and 1280 px are saved under
the test's temporary directory (screenshots/).

One browser serves the whole module. Without Chromium the tests are skipped, unless
BROADCASTER_BROWSER_TESTS=required (set by .ci/run), when they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from tests.stack import Stack

from broadcaster.auth import create_api_key

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("BROADCASTER_BROWSER_TESTS") == "required"
SERIOUS = ("serious", "critical")
WIDTHS = (360, 1280)
ONE_TIME_CODE = """axe.configure({checks: [{id: "autocomplete-valid",
                                      options: {standaloneTerms: ["one-time-code"]}}]})"""
ANCHORS = {"places": "postal-code"}  # a group's error links to its first control


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "headless Chromium needs Debian's chromium and chromium-driver packages"
        if REQUIRED:
            pytest.fail(f"{message} (BROADCASTER_BROWSER_TESTS=required)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def service(stack: Stack) -> Stack:
    """API and dispatcher in one process, sending through the simulator."""
    stack.start_simulator()
    stack.write_config(rate=200)
    stack.start_service(
        "serve",
        BROADCASTER_ORGANISATION="Tryghed",
        BROADCASTER_CONTACT="Nordsjællands Politi, tlf. 114",
        BROADCASTER_PRIVACY_URL="https://example.org/privatliv",
        BROADCASTER_SIGNUP_SMS_PER_NUMBER="10",
    )
    return stack


# ---------------------------------------------------------------- helpers


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def submit(driver: Any, button_id: str) -> None:
    """Press a submit button and wait for the next page."""
    old = driver.find_element("tag name", "html")
    by_id(driver, button_id).click()
    deadline = time.monotonic() + 15
    while True:
        try:
            old.tag_name  # noqa: B018  # raises once the page was replaced
        except Exception:
            break
        assert time.monotonic() < deadline, "the page did not change"
        time.sleep(0.05)
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete")


def wait_for(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def error_at(driver: Any, field: str) -> str:
    """The message shown next to a field, also linked from the summary at the top."""
    try:
        message = by_id(driver, f"{field}-error").text
    except Exception:
        raise AssertionError(f"no error at {field}: {driver.page_source}") from None
    summary = by_id(driver, "error-summary-title").find_element("xpath", "..")
    links = summary.find_elements("css selector", "a")
    anchors = [a.get_attribute("href").rsplit("#", 1)[1] for a in links]
    assert ANCHORS.get(field, field) in anchors, (field, anchors)
    return str(message)


def check_page(driver: Any, shots: Path, name: str) -> None:
    """axe-core finds no serious or critical violation, nothing scrolls sideways at 360 px, and
    a full-page screenshot is saved at each width."""
    from axe_selenium_python import Axe

    axe = Axe(driver)
    axe.inject()
    # The axe-core that axe-selenium-python bundles (3.1) predates the HTML standard's
    # autocomplete token one-time-code (the code field's, for phones that fill in SMS codes).
    driver.execute_script(ONE_TIME_CODE)
    results = axe.run()
    bad = [v for v in results["violations"] if v["impact"] in SERIOUS]
    assert not bad, f"{name}: {axe.report(bad)}"
    shots.mkdir(exist_ok=True)
    for width in WIDTHS:
        driver.set_window_size(width, 900)
        inner = driver.execute_script("return window.innerWidth")
        scroll = driver.execute_script("return document.documentElement.scrollWidth")
        assert scroll <= inner, f"{name} scrolls sideways at {width} px ({scroll} > {inner})"
        if width < 400:  # what a phone shows first
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(shots / f"{name}-{width}-screen.png"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height + 120, 8000))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(shots / f"{name}-{width}.png"))
    driver.set_window_size(1280, 900)


def sms_code(sim_url: str, phone: str, after: int = 0) -> tuple[str, int]:
    """The newest code the simulator received for the number, waiting for one after `after`
    messages; returns it and the messages seen."""
    deadline = time.monotonic() + 20
    msisdn = int(phone.lstrip("+"))
    while True:
        messages = [
            m for m in httpx.get(f"{sim_url}/_sim/messages").json() if m["msisdn"] == msisdn
        ]
        if len(messages) > after:
            found = re.search(r"\b(\d{6})\b", messages[-1]["message"])
            assert found, messages[-1]
            return found.group(1), len(messages)
        assert time.monotonic() < deadline, "no code reached the gateway"
        time.sleep(0.1)


def fill(driver: Any, element_id: str, text: str) -> None:
    element = by_id(driver, element_id)
    element.clear()
    element.send_keys(text)


async def read_api(pool: asyncpg.Pool, stack: Stack, path: str) -> dict[str, Any]:
    """What the API answers with a subscribers:read key."""
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "reader", ["subscribers:read"])
    async with httpx.AsyncClient(base_url=stack.api_url) as api:
        r = await api.get(path, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def subscriber(pool: asyncpg.Pool, stack: Stack, phone: str) -> dict[str, Any]:
    """The subscriber as the API shows it."""
    return await read_api(pool, stack, f"/v1/subscribers/{phone}")


# ---------------------------------------------------------------- tests


async def test_signing_up_in_danish(
    browser: Any, service: Stack, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    phone = "+4526123470"
    shots = tmp_path / "screenshots"
    browser.get(f"{service.api_url}/tilmeld")
    assert browser.find_element("tag name", "html").get_attribute("lang") == "da"
    assert browser.title.startswith("Tilmeld dig beskeder fra politiet")
    check_page(browser, shots, "tilmeld")

    # Nothing filled in, an invalid number, no consent: each says so at its field.
    fill(browser, "phone", "1234")
    submit(browser, "send-code")
    assert "Skriv et gyldigt mobilnummer" in error_at(browser, "phone")
    assert "Vælg mindst ét postnummer" in error_at(browser, "places")
    assert "Sæt kryds" in error_at(browser, "consent")
    assert by_id(browser, "phone").get_attribute("value") == "1234"
    check_page(browser, shots, "tilmeld-fejl")

    fill(browser, "phone", "26 12 34 70")
    by_id(browser, "postal-code-3400").click()
    submit(browser, "send-code")
    assert "Sæt kryds" in error_at(browser, "consent")
    assert by_id(browser, "postal-code-3400").is_selected()  # kept
    by_id(browser, "consent").click()
    by_id(browser, "reason-help_community").click()
    submit(browser, "send-code")
    assert "Vi har sendt en kode til 26 12 34 70" in by_id(browser, "main").text
    check_page(browser, shots, "tilmeld-kode")
    code, seen = sms_code(service.sim_url, phone)

    wrong = "000000" if code != "000000" else "111111"
    fill(browser, "code", wrong)
    submit(browser, "confirm")
    assert "Koden er forkert. Du har 4 forsøg tilbage" in error_at(browser, "code")
    assert by_id(browser, "code").get_attribute("value") == wrong
    check_page(browser, shots, "tilmeld-kode-fejl")

    await pool.execute("UPDATE signups SET expires_at = now() - interval '1 second'")
    fill(browser, "code", code)
    submit(browser, "confirm")
    assert "Koden er udløbet" in error_at(browser, "code")
    submit(browser, "resend")  # a new code, for the same sign-up
    code, _ = sms_code(service.sim_url, phone, after=seen)
    fill(browser, "code", code)
    submit(browser, "confirm")
    assert browser.find_element("tag name", "h1").text == "Du er tilmeldt"
    assert "3400 Hillerød" in by_id(browser, "areas").text
    check_page(browser, shots, "tilmeld-bekraeftet")

    record = await subscriber(pool, service, phone)
    assert record["subscriber"]["status"] == "active"
    assert record["subscriber"]["source"] == "web"
    assert record["subscriber"]["reason"] == "help_community"
    assert [p["postal_code"] for p in record["locations"]] == ["3400"]
    stats = await read_api(pool, service, "/v1/stats/subscribers?by=postal_code")
    active = {z["code"]: z["active"] for z in stats["zones"]}
    assert active["3400"] == 1 and sum(active.values()) == 1


async def test_signing_up_in_english_with_the_keyboard_and_location_then_leaving(
    browser: Any, service: Stack, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    phone = "+4526123471"
    shots = tmp_path / "screenshots"
    browser.execute_cdp_cmd(
        "Browser.grantPermissions", {"origin": service.api_url, "permissions": ["geolocation"]}
    )
    browser.execute_cdp_cmd(
        "Emulation.setGeolocationOverride", {"latitude": 55.93, "longitude": 12.3, "accuracy": 50}
    )
    browser.get(f"{service.api_url}/tilmeld")
    by_id(browser, "main")  # the Danish page links to the English one
    browser.find_element("link text", "English").click()
    wait_for(lambda: browser.find_element("tag name", "html").get_attribute("lang") == "en")
    check_page(browser, shots, "signup")

    # The keyboard alone: the number, the location button, a postal code, consent, submit.
    by_id(browser, "phone").send_keys("+45 26 12 34 71")
    active = browser.switch_to.active_element
    active.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "use-location"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: "55.93" in by_id(browser, "location-status").text)
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "postal-code"
    for _ in range(120):
        if browser.switch_to.active_element.get_attribute("id") == "postal-code-3000":
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    browser.switch_to.active_element.send_keys(Keys.SPACE)
    for _ in range(120):
        if browser.switch_to.active_element.get_attribute("id") == "consent":
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    browser.switch_to.active_element.send_keys(Keys.SPACE)
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "send-code"
    old = browser.find_element("tag name", "html")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: _gone(old))
    assert "We have sent a code to 26 12 34 71" in by_id(browser, "main").text
    code, _ = sms_code(service.sim_url, phone)
    assert by_id(browser, "code")
    fill(browser, "code", code)
    submit(browser, "confirm")
    assert browser.find_element("tag name", "h1").text == "You are signed up"
    areas = by_id(browser, "areas").text
    assert "3000 Helsingør" in areas and "Your location (55.9300, 12.3000)" in areas
    check_page(browser, shots, "signup-confirmed")
    record = await subscriber(pool, service, phone)
    assert record["subscriber"]["status"] == "active"
    assert record["subscriber"]["language"] == "en"  # the English page's default
    assert {p.get("postal_code") for p in record["locations"]} == {None, "3000"}

    # English errors on the English page.
    browser.get(f"{service.api_url}/en/signup")
    fill(browser, "phone", "12")
    submit(browser, "send-code")
    assert "Enter a valid mobile number" in error_at(browser, "phone")
    assert "Tick the box" in error_at(browser, "consent")

    # Leaving: number, code by SMS, out.
    _, sent = sms_code(service.sim_url, phone)
    browser.get(f"{service.api_url}/en/leave")
    check_page(browser, shots, "leave")
    fill(browser, "phone", "26123471")
    submit(browser, "send-code")
    assert "If 26 12 34 71 is signed up" in by_id(browser, "main").text
    check_page(browser, shots, "leave-code")
    # The code page in the other language and back, the number kept (no new code is sent).
    submit(browser, "other-language")
    assert "Er 26 12 34 71 tilmeldt" in by_id(browser, "main").text
    check_page(browser, shots, "leave-code-da")
    submit(browser, "other-language")
    assert "If 26 12 34 71 is signed up" in by_id(browser, "main").text
    code, _ = sms_code(service.sim_url, phone, after=sent)
    fill(browser, "code", code)
    submit(browser, "confirm")
    assert browser.find_element("tag name", "h1").text == "You have left"
    check_page(browser, shots, "left")
    record = await subscriber(pool, service, phone)
    assert record["subscriber"]["status"] == "opted_out"
    assert record["subscriber"]["opt_out_reason"] == "leave page"

    # An address under the pages that is none of them: a page in its language, not JSON.
    browser.get(f"{service.api_url}/en/no-such-page")
    assert browser.find_element("tag name", "h1").text == "Page not found"
    check_page(browser, shots, "not-found")
    browser.find_element("link text", "Go to the start page").click()
    wait_for(lambda: browser.find_element("tag name", "h1").text.startswith("Sign up"))


def _gone(element: Any) -> bool:
    try:
        element.tag_name  # noqa: B018
    except Exception:
        return True
    return False


async def test_leaving_in_danish_and_the_429_page(
    browser: Any, service: Stack, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    browser.get(f"{service.api_url}/afmeld")
    check_page(browser, shots, "afmeld")
    fill(browser, "phone", "abc")
    submit(browser, "send-code")
    assert "Skriv et gyldigt mobilnummer" in error_at(browser, "phone")
    check_page(browser, shots, "afmeld-fejl")
    # Throttled: the page says when to try again (the tenth try for one number this hour).
    for _ in range(11):
        browser.get(f"{service.api_url}/afmeld")
        fill(browser, "phone", "26123472")
        submit(browser, "send-code")
    assert browser.find_element("tag name", "h1").text == "For mange forsøg"
    assert re.search(r"Prøv igen om \d+ minutter", browser.page_source)
    check_page(browser, shots, "for-mange")
