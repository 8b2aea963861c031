"""Rendering a page: the templates (package data, found wherever the package is installed), the
headers every page carries, and the CSRF token of its forms.

Headers: a Content-Security-Policy that lets the page load only its own stylesheet and script
(no inline script or style, no other origin, no frames, forms posted only to itself),
X-Frame-Options DENY, Referrer-Policy same-origin (no address leaves the site, yet a form post
still says where it comes from: under no-referrer browsers send `Origin: null`), nosniff, no
caching (a page can show a phone number), and Permissions-Policy allowing geolocation for the
page itself only.

CSRF: double-submit cookie. The form page sets a random token in a cookie (HttpOnly,
SameSite=Strict, Secure behind HTTPS) and in a hidden field; a post is taken only when both are
there and equal, and, when the browser says where it comes from (Origin), only from this site.
No server-side state is needed, so any API process can take the post.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import astuple, dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jinja2
from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from starlette.types import Receive, Scope, Send

from broadcaster.settings import Settings
from broadcaster.web.texts import WORDS


@dataclass(frozen=True)
class Paths:
    signup: str
    signup_code: str
    leave: str
    leave_code: str


PATHS = {
    "da": Paths("/tilmeld", "/tilmeld/kode", "/afmeld", "/afmeld/kode"),
    "en": Paths("/en/signup", "/en/signup/code", "/en/leave", "/en/leave/code"),
}
PAGE_PATHS = frozenset(path for paths in PATHS.values() for path in astuple(paths))

CSRF_COOKIE = "broadcaster_csrf"
CSRF_FIELD = "csrf"
# Posted by a code page's language link: show the same code page in the other language.
SWITCH_FIELD = "switch"
_TOKEN_CHARS = 43  # secrets.token_urlsafe(32)

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "geolocation=(self), camera=(), microphone=()",
}
PAGE_HEADERS = {**HEADERS, "Cache-Control": "no-store"}

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("broadcaster.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

ASSETS = {"web.css": "text/css; charset=utf-8", "location.js": "text/javascript; charset=utf-8"}


def asset(name: str) -> bytes:
    """A file of static/ (package data)."""
    return resources.files("broadcaster.web").joinpath("static", name).read_bytes()


def csrf_token(request: Request) -> str:
    """The browser's token (from its cookie), or a new one."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) == _TOKEN_CHARS and token.replace("-", "").replace("_", "").isalnum():
        return token
    return secrets.token_urlsafe(32)


def csrf_ok(request: Request, posted: str, settings: Settings) -> bool:
    """Whether a post carries the token of its cookie and comes from this site."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not posted or not hmac.compare_digest(cookie.encode(), posted.encode()):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    allowed = {request.headers.get("host", ""), urlsplit(settings.public_url).netloc}
    return urlsplit(origin).netloc in allowed


def render(
    request: Request,
    settings: Settings,
    template: str,
    language: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """The page `template` in `language`, with its headers and a CSRF token for its forms."""
    words = WORDS[language]
    token = csrf_token(request)
    root = request.scope.get("root_path", "")

    def say(key: str, **values: Any) -> str:
        return words[key].format(org=settings.organisation, **values)

    errors: dict[str, tuple[str, dict[str, Any]]] = context.pop("errors", {})
    anchors: dict[str, str] = context.pop("anchors", {})
    shown = {name: say(key, **values) for name, (key, values) in errors.items()}
    context.setdefault("other_post", None)
    html = _environment.get_template(template).render(
        lang=language,
        t=words,
        say=say,
        org=settings.organisation,
        contact=settings.contact,
        privacy_url=settings.privacy_url,
        root=root,
        csrf=token,
        csrf_field=CSRF_FIELD,
        switch_field=SWITCH_FIELD,
        errors=shown,
        summary=[(anchors.get(name, name), message) for name, message in shown.items()],
        **context,
    )
    response = HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or settings.public_url.startswith("https:"),
            path=root or "/",
        )
    return response


def language_of(path: str) -> str:
    return "en" if path.startswith("/en/") else "da"


def pages_language(path: str) -> str | None:
    """The language of the pages a path is under (/en/..., and /tilmeld/... or /afmeld/... in
    Danish), or None for a path outside them (the API's, /v1/...)."""
    if path == "/en" or path.startswith("/en/"):
        return "en"
    if path.startswith(tuple(f"{p}/" for p in (PATHS["da"].signup, PATHS["da"].leave))):
        return "da"
    return None


def not_found_page(request: Request, settings: Settings, language: str) -> Response:
    """'Page not found' in `language`, 404, with a link to the start (the sign-up page) and to
    the other language's."""
    return render(
        request,
        settings,
        "message.html",
        language,
        status=404,
        paths=PATHS[language],
        back_url=PATHS[language].signup,
        back_key="not_found_back",
        title_key="not_found_title",
        text_key="not_found_text",
        other_url=PATHS["da" if language == "en" else "en"].signup,
    )


def form_of(path: str) -> str:
    """The form a page belongs to, for its way back."""
    paths = PATHS[language_of(path)]
    return paths.leave if path in (paths.leave, paths.leave_code) else paths.signup


def error_page(
    request: Request, settings: Settings, status: int, headers: dict[str, str] | None = None
) -> Response:
    """'Something went wrong' in the page's language, with `status`."""
    path = request.url.path
    return render(
        request,
        settings,
        "message.html",
        language_of(path),
        status=status,
        headers=headers,
        paths=PATHS[language_of(path)],
        back_url=form_of(path),
        title_key="error_title",
        text_key="error_text",
        other_url=None,
    )


async def send_error_page(
    scope: Scope, receive: Receive, send: Send, settings: Settings, status: int, close: bool
) -> None:
    """An error page answered by the Guard (a body too large, a fault outside the route)."""
    headers = {"Connection": "close"} if close else None
    await error_page(Request(scope), settings, status, headers)(scope, receive, send)
