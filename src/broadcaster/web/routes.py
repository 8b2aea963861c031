"""The citizens' pages: sign up (phone, areas, language, reason, consent) → code by SMS → confirmed;
leave (phone) → code by SMS → opted out. Danish at /tilmeld and /afmeld, English at /en/signup and
/en/leave; each links to the other language (a code page by posting its state to the other
language's code page, see `switched`). An unknown address under them is a 404 page in its
language (api/problems.py asks pages.not_found_page).

They need no API key (the Guard keys only /v1/) and reach nothing but citizens/signups.py and
citizens/leaving.py, through the same functions, throttles and SMS as POST /v1/signups. They
are left out of the OpenAPI document (HTML for people, not an API). Any error is a page in the
page's language: a field's next to it with a summary at the top, a throttle a 429 page that says
when to try again, an outage or a fault of ours a 503 or 500 page; never JSON.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from broadcaster.api.problems import database_problem
from broadcaster.api.routes_signups import client_of
from broadcaster.citizens import leaving, signups
from broadcaster.citizens.throttle import Throttled
from broadcaster.ingest.zones import UnknownZones
from broadcaster.settings import Settings
from broadcaster.web import forms
from broadcaster.web.pages import (
    ASSETS,
    CSRF_FIELD,
    HEADERS,
    PATHS,
    SWITCH_FIELD,
    asset,
    csrf_ok,
    error_page,
    form_of,
    render,
)
from broadcaster.web.texts import REASONS, WORDS

log = logging.getLogger(__name__)


OTHER = {"da": "en", "en": "da"}

POSTAL_ZONES = """
SELECT code, name FROM zones WHERE kind = 'postal_code' AND code IS NOT NULL ORDER BY code, id
"""

# Where a field's error links to from the summary (the first control of a group).
ANCHORS = {"places": "postal-code", "form": "phone"}


class PageRoute(APIRoute):
    """A route whose unexpected errors are pages too: 503 while the database is away, else 500
    (logged), in the page's language."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                problem = database_problem(exc)
                if problem is None:
                    log.exception("unhandled error on %s %s", request.method, request.url.path)
                    return error_page(request, settings_of(request), 500)
                headers = dict(problem.headers or {})
                return error_page(request, settings_of(request), problem.status, headers)

        return page_handler


router = APIRouter(route_class=PageRoute, include_in_schema=False, tags=["web"])


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def postal_zones(request: Request) -> dict[str, str]:
    """{postal code: the name shown}: '3400 Hillerød' (the code is put first if the zone's name
    does not start with it)."""
    async with request.app.state.database.connection() as conn:
        rows = await conn.fetch(POSTAL_ZONES)
    zones: dict[str, str] = {}
    for r in rows:
        name = r["name"] if r["name"].startswith(r["code"]) else f"{r['code']} {r['name']}"
        zones.setdefault(r["code"], name)
    return zones


def throttled(request: Request, language: str, exc: Throttled) -> Response:
    return render(
        request,
        settings_of(request),
        "message.html",
        language,
        status=429,
        headers={"Retry-After": str(exc.retry_after)},
        paths=PATHS[language],
        back_url=form_of(request.url.path),
        title_key="throttled_title",
        text_key="throttled_text",
        text_values={"minutes": max(1, math.ceil(exc.retry_after / 60))},
        other_url=None,
    )


# ---------------------------------------------------------------- a post, the shape they share

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Expired:
    """Where a stale or foreign CSRF token is told, and with which status."""

    field: str
    status: int


ON_FORM = Expired("form", 400)  # a form page: at the top, 400 (nothing of it was checked)
ON_CODE = Expired("code", 422)  # a code page: at the code field


async def take_post(
    request: Request,
    language: str,
    fields: forms.Fields,
    checked: forms.Checked,
    again: Callable[[int], Awaitable[Response]],
    call: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    expired: Expired,
    errors: Mapping[type[Exception], Callable[[forms.Checked, Any], None]] | None = None,
) -> T | Response:
    """What every post of these pages does: check the CSRF token, then the form (`checked`),
    then `call` the citizens' function on a connection. A throttle is the 429 page; an error
    named in `errors` is put on the form by its function and the page shown `again` with 422.
    Returns the call's result, or the page to answer with instead."""
    if not csrf_ok(request, fields.one(CSRF_FIELD), settings_of(request)):
        checked.errors = {expired.field: ("err_form_expired", {})}
        return await again(expired.status)
    if checked.errors:
        return await again(422)
    try:
        async with request.app.state.database.connection() as conn:
            return await call(conn)
    except Throttled as exc:
        return throttled(request, language, exc)
    except Exception as exc:
        put = next((f for kind, f in (errors or {}).items() if isinstance(exc, kind)), None)
        if put is None:
            raise
        put(checked, exc)
        return await again(422)


class CodeConfirm(Protocol[T_co]):
    """signups.confirm and leaving.confirm: the number's code checked, and what it is for done."""

    def __call__(
        self, conn: asyncpg.Connection, settings: Settings, *, phone: str, code: str, client: str
    ) -> Awaitable[T_co]: ...


async def take_code(
    request: Request,
    language: str,
    fields: forms.Fields,
    checked: forms.Checked,
    again: Callable[[int], Awaitable[Response]],
    confirm: CodeConfirm[T],
) -> T | Response:
    """A code page's post (take_post): the code in `checked` given to `confirm`, a wrong,
    expired or spent code put at the code field."""

    async def call(conn: asyncpg.Connection) -> T:
        return await confirm(
            conn,
            settings_of(request),
            phone=checked.phone,
            code=checked.values["digits"],
            client=client_of(request),
        )

    return await take_post(
        request,
        language,
        fields,
        checked,
        again,
        call,
        expired=ON_CODE,
        errors={signups.SignupError: code_error},
    )


def switched(fields: forms.Fields) -> bool:
    """Whether a code page's language link was followed: the same code page is shown in the
    other language (the number and the sign-up carried as the page carries them; a code typed
    but not sent is not). Nothing is checked or sent, so nothing needs the CSRF token."""
    return fields.one(SWITCH_FIELD) == "language"


# ---------------------------------------------------------------- sign-up


async def signup_form(
    request: Request,
    language: str,
    checked: forms.Checked | None = None,
    status: int = 200,
) -> Response:
    values: dict[str, Any] = {"phone": "", "postal_codes": [], "lat": "", "lon": ""}
    values.update(language=language, reason="", consent=False)
    if checked is not None:
        values.update(checked.values)
    return render(
        request,
        settings_of(request),
        "signup.html",
        language,
        status=status,
        paths=PATHS[language],
        other_url=PATHS[OTHER[language]].signup,
        zones=await postal_zones(request),
        reasons=REASONS,
        values=values,
        errors=checked.errors if checked is not None else {},
        anchors=ANCHORS,
    )


async def code_page(
    request: Request, language: str, signup: forms.Checked, checked: forms.Checked, status: int
) -> Response:
    settings = settings_of(request)
    return render(
        request,
        settings,
        "code.html",
        language,
        status=status,
        paths=PATHS[language],
        other_url=None,
        other_post=PATHS[OTHER[language]].signup_code,
        phone=checked.phone or signup.phone,
        shown_phone=forms.shown_phone(checked.phone or signup.phone),
        minutes=settings.signup_code_minutes,
        signup=signup.values,
        values=checked.values,
        errors=checked.errors,
        anchors=ANCHORS,
    )


async def signup_submit(request: Request, language: str) -> Response:
    settings = settings_of(request)
    fields = forms.Fields(await request.body())
    checked = forms.check_signup(fields, language)

    async def again(status: int) -> Response:
        return await signup_form(request, language, checked, status=status)

    async def start(conn: asyncpg.Connection) -> None:
        await signups.start(
            conn,
            settings,
            phone=checked.phone,
            locations=checked.locations,
            language=checked.values["language"],
            reason=checked.values["reason"] or None,
            source="web",
            client=client_of(request),
        )

    answer = await take_post(
        request,
        language,
        fields,
        checked,
        again,
        start,
        expired=ON_FORM,
        errors={UnknownZones: unknown_places},
    )
    if isinstance(answer, Response):
        return answer
    return await code_page(request, language, checked, forms.Checked(), 200)


def unknown_places(checked: forms.Checked, exc: UnknownZones) -> None:
    checked.fail("places", "err_places_unknown", codes=", ".join(exc.missing))


CODE_ERRORS = {
    "no_signup": "err_no_signup",
    "expired": "err_code_expired",
    "too_many": "err_code_too_many",
    "wrong": "err_code_wrong",
}


def code_error(checked: forms.Checked, exc: signups.SignupError) -> None:
    key = CODE_ERRORS.get(exc.kind, "err_code_wrong_plain")
    if key == "err_code_wrong" and exc.left is None:
        key = "err_code_wrong_plain"
    checked.fail("code", key, left=exc.left)


async def signup_confirm(request: Request, language: str) -> Response:
    settings = settings_of(request)
    fields = forms.Fields(await request.body())
    signup = forms.check_signup(fields, language)  # carried in hidden fields, for "new code"
    checked = forms.check_code(fields)
    if not checked.phone:
        return RedirectResponse(PATHS[language].signup, status_code=303)
    if switched(fields):
        return await code_page(request, language, signup, forms.Checked(), 200)

    async def again(status: int) -> Response:
        return await code_page(request, language, signup, checked, status)

    done = await take_code(request, language, fields, checked, again, signups.confirm)
    if isinstance(done, Response):
        return done
    zones = await postal_zones(request)
    areas = [
        zones.get(p["postal_code"], p["postal_code"])
        if "postal_code" in p
        else render_point(language, p)
        for p in done.locations
    ]
    log.info("signed up on the web page", extra={"language": done.language})
    return render(
        request,
        settings,
        "done.html",
        language,
        paths=PATHS[language],
        other_url=None,
        areas=areas,
    )


def render_point(language: str, place: dict[str, Any]) -> str:
    return WORDS[language]["done_point"].format(
        lat=f"{place['lat']:.4f}", lon=f"{place['lon']:.4f}"
    )


# ---------------------------------------------------------------- leaving


async def leave_form(
    request: Request, language: str, checked: forms.Checked | None = None, status: int = 200
) -> Response:
    return render(
        request,
        settings_of(request),
        "leave.html",
        language,
        status=status,
        paths=PATHS[language],
        other_url=PATHS[OTHER[language]].leave,
        values=checked.values if checked is not None else {"phone": ""},
        errors=checked.errors if checked is not None else {},
        anchors=ANCHORS,
    )


async def leave_code_page(
    request: Request, language: str, checked: forms.Checked, status: int
) -> Response:
    settings = settings_of(request)
    return render(
        request,
        settings,
        "leave_code.html",
        language,
        status=status,
        paths=PATHS[language],
        other_url=None,
        other_post=PATHS[OTHER[language]].leave_code,
        phone=checked.phone,
        shown_phone=forms.shown_phone(checked.phone),
        minutes=settings.signup_code_minutes,
        values=checked.values,
        errors=checked.errors,
        anchors=ANCHORS,
    )


async def leave_submit(request: Request, language: str) -> Response:
    settings = settings_of(request)
    fields = forms.Fields(await request.body())
    checked = forms.Checked()
    forms.check_phone(checked, fields.one("phone"))

    async def again(status: int) -> Response:
        return await leave_form(request, language, checked, status=status)

    async def start(conn: asyncpg.Connection) -> None:
        await leaving.start(conn, settings, phone=checked.phone, client=client_of(request))

    answer = await take_post(request, language, fields, checked, again, start, expired=ON_FORM)
    if isinstance(answer, Response):
        return answer
    checked.values["code"] = ""
    return await leave_code_page(request, language, checked, 200)


async def leave_confirm(request: Request, language: str) -> Response:
    settings = settings_of(request)
    fields = forms.Fields(await request.body())
    checked = forms.check_code(fields)
    if not checked.phone:
        return RedirectResponse(PATHS[language].leave, status_code=303)
    if switched(fields):
        shown = forms.Checked(
            values={"phone": checked.values["phone"], "code": ""}, phone=checked.phone
        )
        return await leave_code_page(request, language, shown, 200)

    async def again(status: int) -> Response:
        return await leave_code_page(request, language, checked, status)

    answer = await take_code(request, language, fields, checked, again, leaving.confirm)
    if isinstance(answer, Response):
        return answer
    log.info("left on the web page")
    return render(
        request,
        settings,
        "left.html",
        language,
        paths=PATHS[language],
        other_url=None,
    )


# ---------------------------------------------------------------- the route table

Page = Callable[[Request, str], Awaitable[Response]]


def _page(handler: Page, language: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(request, language)

    endpoint.__name__ = f"{handler.__name__}_{language}"
    return endpoint


def _back_to(path: str) -> Callable[[], Awaitable[Response]]:
    """GET on a code page (a reload, a bookmark): back to the form, which starts over."""

    async def endpoint() -> Response:
        return RedirectResponse(path, status_code=303)

    return endpoint


for _language, _paths in PATHS.items():
    router.add_api_route(_paths.signup, _page(signup_form, _language), methods=["GET"])
    router.add_api_route(_paths.signup, _page(signup_submit, _language), methods=["POST"])
    router.add_api_route(_paths.signup_code, _page(signup_confirm, _language), methods=["POST"])
    router.add_api_route(_paths.signup_code, _back_to(_paths.signup), methods=["GET"])
    router.add_api_route(_paths.leave, _page(leave_form, _language), methods=["GET"])
    router.add_api_route(_paths.leave, _page(leave_submit, _language), methods=["POST"])
    router.add_api_route(_paths.leave_code, _page(leave_confirm, _language), methods=["POST"])
    router.add_api_route(_paths.leave_code, _back_to(_paths.leave), methods=["GET"])


@router.get("/assets/{name}")
async def static_file(name: str) -> Response:
    """The pages' stylesheet and script (nothing else is served from here)."""
    content_type = ASSETS.get(name)
    if content_type is None:
        return Response(status_code=404, headers=HEADERS)
    headers = {**HEADERS, "Cache-Control": "public, max-age=3600"}
    return Response(asset(name), media_type=content_type, headers=headers)
