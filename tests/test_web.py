"""The citizens' web pages over HTTP (the browser tests are in test_web_browser.py): they render in
both languages with their headers, refuse a post without its CSRF token, sign up and leave
through the same code path as the API (codes read from the notices), show each error as a page
in the page's language, answer 429 pages when throttled, and stay out of the OpenAPI document."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from tests.test_signups import last_code

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.settings import GatewaySettings, load_settings
from broadcaster.web.pages import CSRF_COOKIE

PHONE = "+4526123462"


@pytest.fixture
async def web(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        database_url=db_url,
        organisation="Tryghed",
        contact="Ring 114",
        privacy_url="https://example.org/privatliv",
        signup_sms_per_number=2,
        gateways=[GatewaySettings(name="primary", type="gatewayapi", base_url="http://x")],
    )
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def post(
    web: httpx.AsyncClient, path: str, form: dict[str, Any], *, page: str | None = None
) -> httpx.Response:
    """Post `form` with the token of the page at `page` (the form's own path by default)."""
    got = await web.get(page or path)
    return await web.post(path, data={"csrf": token(got), **form})


SIGNUP = {
    "phone": "26 12 34 62",
    "postal_code": ["3400", "3000"],
    "language": "da",
    "reason": "feel_safer",
    "consent": "yes",
}


async def signed_up(web: httpx.AsyncClient, pool: asyncpg.Pool) -> httpx.Response:
    """PHONE signed up on the Danish page and confirmed with its code; the confirmation page."""
    r = await post(web, "/tilmeld", SIGNUP)
    return await web.post(
        "/tilmeld/kode",
        data={"csrf": token(r), "phone": PHONE, "code": await last_code(pool, PHONE)},
    )


async def test_pages_render_in_both_languages_with_their_headers(web: httpx.AsyncClient) -> None:
    for path, lang, words in [
        ("/tilmeld", "da", ["Mobilnummer", "3400 Hillerød", "Ring 114", 'href="/en/signup"']),
        ("/en/signup", "en", ["Mobile number", "3400 Hillerød", 'href="/tilmeld"']),
        ("/afmeld", "da", ["Afmeld beskeder", 'href="/en/leave"']),
        ("/en/leave", "en", ["Stop messages", 'href="/afmeld"']),
    ]:
        r = await web.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert f'<html lang="{lang}">' in r.text
        for word in words:
            assert word in r.text, (path, word)
        assert "<script>" not in r.text and "style=" not in r.text
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"
        cookie = r.headers.get("set-cookie") or ""
        assert not cookie or ("HttpOnly" in cookie and "SameSite=strict" in cookie)
        assert "https://example.org/privatliv" in r.text
    css = await web.get("/assets/web.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await web.get("/assets/location.js")).status_code == 200
    assert (await web.get("/assets/..%2Fpages.py")).status_code == 404
    assert (await web.get("/assets/pages.py")).status_code == 404


async def test_signing_up_on_the_page_is_the_api_sign_up(
    web: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    r = await post(web, "/tilmeld", SIGNUP)
    assert r.status_code == 200, r.text
    assert "Vi har sendt en kode til 26\u00a012\u00a034\u00a062" in r.text
    row = await pool.fetchrow("SELECT status, source FROM subscribers WHERE phone = $1", PHONE)
    assert (row["status"], row["source"]) == ("pending", "web")
    code = await last_code(pool, PHONE)
    r = await web.post("/tilmeld/kode", data={"csrf": token(r), "phone": PHONE, "code": code})
    assert r.status_code == 200, r.text
    assert "Du er tilmeldt" in r.text
    assert "3400 Hillerød" in r.text and "3000 Helsingør" in r.text
    row = await pool.fetchrow(
        "SELECT status, reason, language FROM subscribers WHERE phone = $1", PHONE
    )
    assert tuple(row) == ("active", "feel_safer", "da")
    codes = await pool.fetch(
        """SELECT z.code FROM subscriber_zones r JOIN zones z ON z.id = r.zone_id
           JOIN subscribers s ON s.id = r.subscriber_id WHERE s.phone = $1 ORDER BY z.code""",
        PHONE,
    )
    assert [c["code"] for c in codes] == ["3000", "3400"]


async def test_a_post_without_its_token_or_from_another_site_is_refused(
    web: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await web.get("/tilmeld")
    r = await web.post("/tilmeld", data=SIGNUP)
    assert r.status_code == 400 and "Siden var udløbet" in r.text
    r = await web.post("/tilmeld", data={**SIGNUP, "csrf": "x" * 43})
    assert r.status_code == 400
    got = await web.get("/tilmeld")
    r = await web.post(
        "/tilmeld", data={**SIGNUP, "csrf": token(got)}, headers={"Origin": "https://evil.test"}
    )
    assert r.status_code == 400
    assert await pool.fetchval("SELECT count(*) FROM signups") == 0
    # The form comes back with what was typed.
    assert 'value="26 12 34 62"' in r.text


async def test_each_error_is_shown_next_to_its_field_in_the_pages_language(
    web: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    r = await post(web, "/tilmeld", {"phone": "1234", "language": "da"})
    assert r.status_code == 422
    assert "Der er et problem" in r.text
    assert 'href="#phone">Skriv et gyldigt mobilnummer' in r.text
    assert 'href="#postal-code">Vælg mindst ét postnummer' in r.text
    assert 'href="#consent">Sæt kryds' in r.text
    assert 'id="phone-error"' in r.text and 'aria-invalid="true"' in r.text
    assert 'value="1234"' in r.text
    r = await post(web, "/en/signup", {**SIGNUP, "phone": "", "postal_code": "9999"})
    assert r.status_code == 422
    assert "There is a problem" in r.text and "Enter your mobile number" in r.text
    r = await post(web, "/en/signup", {**SIGNUP, "postal_code": "9999"})
    assert r.status_code == 422 and "We do not know postal code 9999" in r.text
    r = await post(web, "/tilmeld", {**SIGNUP, "postal_code": [], "lat": "x", "lon": "1"})
    assert r.status_code == 422 and "Din position kunne ikke bruges" in r.text
    r = await post(web, "/tilmeld", {**SIGNUP, "reason": "bored"})
    assert r.status_code == 422 and "Vælg en af grundene" in r.text
    assert await pool.fetchval("SELECT count(*) FROM signups") == 0
    # A position alone is a place.
    r = await post(web, "/en/signup", {**SIGNUP, "postal_code": [], "lat": "55.93", "lon": "12.3"})
    assert r.status_code == 200, r.text
    code = await last_code(pool, PHONE)
    wrong = "000000" if code != "000000" else "111111"
    form = {"csrf": token(r), "phone": PHONE, "lat": "55.93", "lon": "12.3", "consent": "yes"}
    r = await web.post("/en/signup/code", data={**form, "code": wrong})
    assert r.status_code == 422 and "The code is not right. You have 4 tries left" in r.text
    assert f'value="{wrong}"' in r.text  # kept as typed
    r = await web.post("/en/signup/code", data={**form, "code": "12"})
    assert r.status_code == 422 and "The code is 6 digits" in r.text
    await pool.execute("UPDATE signups SET expires_at = now() - interval '1 second'")
    r = await web.post("/en/signup/code", data={**form, "code": code})
    assert r.status_code == 422 and "The code has expired" in r.text
    # "Send a new code" carries the sign-up again.
    r = await web.post("/en/signup", data={**form, "language": "en"})
    assert r.status_code == 200 and "We have sent a code" in r.text
    r = await web.post("/en/signup/code", data={**form, "code": await last_code(pool, PHONE)})
    assert r.status_code == 200 and "Your location (55.9300, 12.3000)" in r.text


async def test_leaving_opts_the_number_out_as_stop_does(
    web: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    r = await signed_up(web, pool)
    assert "Du er tilmeldt" in r.text
    r = await post(web, "/afmeld", {"phone": "26123462"})
    assert r.status_code == 200 and "Er 26\u00a012\u00a034\u00a062 tilmeldt" in r.text
    code = await last_code(pool, PHONE)
    wrong = "000000" if code != "000000" else "111111"
    r = await web.post("/afmeld/kode", data={"csrf": token(r), "phone": PHONE, "code": wrong})
    assert r.status_code == 422 and "Koden er forkert" in r.text
    r = await web.post("/afmeld/kode", data={"csrf": token(r), "phone": PHONE, "code": code})
    assert r.status_code == 200 and "Du er afmeldt" in r.text
    row = await pool.fetchrow(
        "SELECT status, opt_out_reason FROM subscribers WHERE phone = $1", PHONE
    )
    assert tuple(row) == ("opted_out", "leave page")
    stop = await pool.fetchval(
        "SELECT message FROM alerts WHERE kind = 'notice' AND reference = 'stop'"
    )
    assert stop.startswith("Tryghed: Du er afmeldt")
    # A number that is not signed up gets the same page, and no SMS.
    notices = await pool.fetchval("SELECT count(*) FROM alerts WHERE kind = 'notice'")
    r = await post(web, "/en/leave", {"phone": "+4526999999"})
    assert r.status_code == 200 and "If 26\u00a099\u00a099\u00a099 is signed up" in r.text
    assert await pool.fetchval("SELECT count(*) FROM alerts WHERE kind = 'notice'") == notices
    r = await web.post(
        "/en/leave/code", data={"csrf": token(r), "phone": "+4526999999", "code": "123456"}
    )
    assert r.status_code == 422 and "The code is not right" in r.text


async def test_leave_requests_go_with_retention_and_erasure(
    web: httpx.AsyncClient, pool: asyncpg.Pool, db_url: str
) -> None:
    from broadcaster.citizens import privacy, retention

    r = await post(web, "/tilmeld", SIGNUP)
    await web.post("/tilmeld/kode", data={"csrf": token(r), "phone": PHONE, "code": "0"})
    await web.post(
        "/tilmeld/kode",
        data={"csrf": token(r), "phone": PHONE, "code": await last_code(pool, PHONE)},
    )
    for _ in range(2):
        assert (await post(web, "/afmeld", {"phone": PHONE})).status_code == 200
    assert await pool.fetchval("SELECT count(*) FROM leave_requests") == 2
    await pool.execute(
        "UPDATE leave_requests SET expires_at = now() - interval '25 hours' WHERE id = "
        "(SELECT min(id) FROM leave_requests)"
    )
    await retention.run(pool, load_settings(database_url=db_url))
    assert await pool.fetchval("SELECT count(*) FROM leave_requests") == 1
    async with pool.acquire() as conn:
        assert await privacy.erase(conn, PHONE) is not None
    assert await pool.fetchval("SELECT count(*) FROM leave_requests") == 0


async def test_no_phone_number_in_the_logs_at_info(
    web: httpx.AsyncClient, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await signed_up(web, pool)
    r = await post(web, "/afmeld", {"phone": PHONE})
    await web.post(
        "/afmeld/kode",
        data={"csrf": token(r), "phone": PHONE, "code": await last_code(pool, PHONE)},
    )
    assert any("web page" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        assert "26123462" not in record.getMessage() + str(record.__dict__), record


async def test_throttled_is_a_429_page_saying_when(web: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await post(web, "/tilmeld", SIGNUP)).status_code == 200
    r = await post(web, "/tilmeld", SIGNUP)
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("text/html")
    assert 'href="/tilmeld">Tilbage' in r.text
    minutes = re.search(r"Prøv igen om (\d+) minutter", r.text)
    assert minutes and 1 <= int(minutes.group(1)) <= 60
    assert 0 < int(r.headers["retry-after"]) <= 3600


async def test_a_body_too_large_is_a_page_too(web: httpx.AsyncClient) -> None:
    r = await web.post("/en/leave", content=b"phone=" + b"1" * 70_000)
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in r.text and 'href="/en/leave">Back' in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    # The API keeps its problem+json.
    r = await web.post("/v1/signups", content=b"{}" + b" " * 70_000)
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_code_page_fetched_again_goes_back_to_its_form(web: httpx.AsyncClient) -> None:
    r = await web.get("/tilmeld/kode", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/tilmeld"
    r = await web.get("/en/leave/code", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/en/leave"


def language_form(page: httpx.Response) -> tuple[str, dict[str, list[str]]]:
    """The action and the fields of a code page's language link (a form: it carries the state)."""
    found = re.search(
        r'<form method="post" action="([^"]+)" class="language-form">(.*?)</form>', page.text, re.S
    )
    assert found, page.text
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)">', found.group(2)
    ):
        fields.setdefault(name, []).append(value)
    return found.group(1), fields


async def test_a_code_page_links_to_the_other_language_keeping_the_sign_up(
    web: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    r = await post(web, "/tilmeld", SIGNUP)
    assert "Vi har sendt en kode til 26\u00a012\u00a034\u00a062" in r.text
    action, fields = language_form(r)
    assert action == "/en/signup/code"
    assert fields["phone"] == [PHONE] and fields["postal_code"] == ["3400", "3000"]
    assert fields["switch"] == ["language"]
    notices = await pool.fetchval("SELECT count(*) FROM alerts WHERE kind = 'notice'")
    r = await web.post(action, data=fields)
    assert r.status_code == 200, r.text
    assert '<html lang="en">' in r.text
    assert "We have sent a code to 26\u00a012\u00a034\u00a062" in r.text
    assert "error-summary" not in r.text  # no code was sent yet: nothing to complain of
    assert language_form(r)[0] == "/tilmeld/kode"  # and back again
    # Nothing was sent or counted: the code of the Danish page works on the English one.
    assert await pool.fetchval("SELECT count(*) FROM alerts WHERE kind = 'notice'") == notices
    code = await last_code(pool, PHONE)
    form = {**fields, "csrf": [token(r)], "code": [code]}
    del form["switch"]
    r = await web.post("/en/signup/code", data=form)
    assert r.status_code == 200 and "You are signed up" in r.text, r.text
    assert "3400 Hillerød" in r.text and "3000 Helsingør" in r.text
    # The SMS language chosen on the form is kept; the page's language was only the page's.
    row = await pool.fetchrow("SELECT status, language FROM subscribers WHERE phone = $1", PHONE)
    assert tuple(row) == ("active", "da")


async def test_the_leave_code_page_links_to_the_other_language_keeping_the_number(
    web: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    r = await signed_up(web, pool)
    r = await post(web, "/en/leave", {"phone": "26123462"})
    action, fields = language_form(r)
    assert action == "/afmeld/kode" and fields["phone"] == [PHONE]
    r = await web.post(action, data=fields)
    assert r.status_code == 200 and '<html lang="da">' in r.text
    assert "Er 26\u00a012\u00a034\u00a062 tilmeldt" in r.text
    r = await web.post(
        "/afmeld/kode",
        data={"csrf": token(r), "phone": PHONE, "code": await last_code(pool, PHONE)},
    )
    assert r.status_code == 200 and "Du er afmeldt" in r.text
    # A switch without a valid number goes back to the form, as a code page without one does.
    r = await web.post(action, data={"switch": "language"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/afmeld"


async def test_an_unknown_page_is_a_404_page_in_its_language(
    web: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    for path, lang, words in [
        ("/en/nowhere", "en", ["Page not found", 'href="/en/signup">Go to the start page']),
        ("/en/signup/code/extra", "en", ["Page not found", 'href="/tilmeld"']),
        ("/tilmeld/ukendt", "da", ["Siden findes ikke", 'href="/tilmeld">Gå til forsiden']),
        ("/afmeld/x/y", "da", ["Siden findes ikke", 'href="/en/signup"']),
    ]:
        r = await web.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html"), path
        assert f'<html lang="{lang}">' in r.text, path
        for word in words:
            assert word in r.text, (path, word)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    # The API's paths (and any other outside the pages) keep their problem+json.
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "web-test")
    for path in ("/v1/nowhere", "/v1/alerts/1/nowhere", "/nowhere", "/english"):
        r = await web.get(path, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json", path


async def test_pages_need_no_key_and_stay_out_of_the_api_document(
    web: httpx.AsyncClient,
) -> None:
    doc = (await web.get("/openapi.json")).json()
    assert not [p for p in doc["paths"] if p.startswith(("/tilmeld", "/afmeld", "/en/", "/assets"))]
    assert (await web.get("/en/signup")).status_code == 200  # no Authorization header


async def test_settings_off_means_no_pages(db_url: str) -> None:
    def paths(web_pages: bool) -> set[str]:
        app = create_app(load_settings(database_url=db_url, web_pages=web_pages), db_url)
        return {route.path for router in app.state.routers for route in router.routes}

    assert {"/tilmeld", "/en/signup"} <= paths(True)
    assert not {"/tilmeld", "/en/signup", "/assets/{name}"} & paths(False)
    assert CSRF_COOKIE  # the cookie's name is part of the pages' contract (README)
