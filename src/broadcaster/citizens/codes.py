"""One-time codes sent by SMS, as sign-up (signups.py) and leaving (leaving.py) use them.

A code is six digits, sent to the number and stored only as a hash of number and code; it is
valid for the settings' `signup_code_minutes`, and a request takes at most MAX_ATTEMPTS tries
before a new code is needed. Codes are compared in constant time. Each caller keeps its own
table of requests (a row with `code_hash`, `attempts` and whether it has `expired`) and says what
a number without a request gets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from broadcaster.citizens.notices import send_notice
from broadcaster.citizens.texts import text
from broadcaster.settings import Settings

MAX_ATTEMPTS = 5


class SignupError(Exception):
    """A confirmation that cannot succeed; `field` is the request member at fault, `kind` says
    why in a word (`no_signup`, `expired`, `too_many`, `wrong`: the web pages word it in the
    page's language) and `left` how many tries remain after a wrong code."""

    def __init__(self, field: str, message: str, kind: str = "", left: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind
        self.left = left


class TooManyAttempts(SignupError):
    """The request's code was tried MAX_ATTEMPTS times: a new code is needed."""


@dataclass(frozen=True)
class Code:
    """A new code: its digits (for the SMS only), its hash (stored) and when it expires."""

    digits: str
    hash: bytes
    expires_at: datetime


def code_hash(phone: str, code: str) -> bytes:
    return hashlib.sha256(f"{phone}:{code}".encode()).digest()


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def lifetime(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.signup_code_minutes)


def issue(settings: Settings, phone: str) -> Code:
    """A new code for the number, valid from now for the code lifetime."""
    digits = new_code()
    return Code(digits, code_hash(phone, digits), datetime.now(UTC) + lifetime(settings))


async def send(
    conn: asyncpg.Connection,
    settings: Settings,
    subscriber_id: int,
    code: Code,
    language: str,
    kind: str,
) -> None:
    """Queue the code's SMS to the subscriber (it expires with the code)."""
    message = text(
        "code",
        language,
        settings.organisation,
        code=code.digits,
        minutes=settings.signup_code_minutes,
    )
    await send_notice(conn, subscriber_id, message, kind, code.expires_at)


def check(row: asyncpg.Record, phone: str, code: str) -> bool:
    """Whether `code` is the one of the request `row`; raises SignupError when the request has
    expired and TooManyAttempts when its tries are spent (whatever the code)."""
    if row["expired"]:
        raise SignupError("code", "the code has expired; ask for a new one", "expired")
    if row["attempts"] >= MAX_ATTEMPTS:
        raise TooManyAttempts("code", "too many wrong codes; ask for a new one", "too_many")
    return hmac.compare_digest(code_hash(phone, code), bytes(row["code_hash"]))


def wrong(attempts: int, message: str) -> SignupError:
    """The error for a wrong code once this try is counted (`attempts` in all): TooManyAttempts
    when none is left, else `message` (which may name the tries `{left}`)."""
    left = MAX_ATTEMPTS - attempts
    if left <= 0:
        return TooManyAttempts("code", "too many wrong codes; ask for a new one", "too_many")
    return SignupError("code", message.format(left=left), "wrong", left)
