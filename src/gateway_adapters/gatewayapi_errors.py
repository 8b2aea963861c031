"""GatewayAPI's error answers, read by their code and mapped to our error taxonomy.

A refused request is answered with a JSON body such as
`{"code": "0x0215", "incident_uuid": "...", "message": "MSISDN %1 blacklisted", "variables":
["4520123456"]}` ("code" and "variables" are left out when empty). The codes
(https://gatewayapi.com/docs/error-codes) that mean more than the HTTP status says:

- one recipient is refused, and with it the whole request (403): 0x0214 temporary blacklist for
  an MSISDN, 0x0215 MSISDN blacklisted, 0x0217 destination country not authorised, 0x021F
  operator not authorised. The adapter takes the recipient out and sends the rest again
  (`RecipientRefused`); 0x0214 may pass later and is retryable, the others fail the recipient.
- the account or its settings are wrong, so every message would fail alike (`GatewayMisconfigured`,
  the batch fails over to the next gateway): credentials and IP addresses (0x0210-0x0213,
  0x0223-0x0226), insufficient credit (0x0216), a message class the account does not have
  (0x0218, 0x021E), SMS not enabled (0x021D), and 0x0311 "Priority %1 not available": URGENT
  and VERY_URGENT normally need the premium message class.
- anything else: the HTTP status decides (`error_for_status`: 5xx unavailable, 429 throttled,
  401/403/404 misconfigured, other 4xx rejected).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from gateway_adapters.base import (
    GatewayError,
    GatewayMisconfigured,
    GatewayRejected,
    OutboundMessage,
    error_for_status,
)

TEMPORARY_BLACKLIST = 0x0214
BLACKLISTED = 0x0215
UNAUTHORISED_COUNTRY = 0x0217
UNAUTHORISED_OPERATOR = 0x021F
PRIORITY_NOT_AVAILABLE = 0x0311
RECIPIENT_CODES = frozenset(
    {TEMPORARY_BLACKLIST, BLACKLISTED, UNAUTHORISED_COUNTRY, UNAUTHORISED_OPERATOR}
)
CONFIG_CODES = frozenset(
    {
        0x0210,  # invalid username
        0x0211,  # invalid password
        0x0212,  # invalid IP address
        0x0213,  # unauthorised IP address
        0x0216,  # insufficient credit
        0x0218,  # unknown message class
        0x021D,  # SMS not enabled for the account
        0x021E,  # message class not configured
        0x0223,  # invalid consumer key
        0x0224,  # invalid signature
        0x0225,  # expired timestamp
        0x0226,  # invalid or used nonce
        PRIORITY_NOT_AVAILABLE,
    }
)

# One recipient of a batch: its index in the batch, its message, its MSISDN.
Recipient = tuple[int, OutboundMessage, int]


class ApiError(NamedTuple):
    """A refusal as GatewayAPI writes it."""

    status: int
    code: int | None
    message: str
    variables: tuple[str, ...]

    def describe(self) -> str:
        """'gatewayapi 0x0215: MSISDN %1 blacklisted': the code and its text, without the
        variables (they may hold a phone number)."""
        if self.code is None:
            return f"HTTP {self.status}: {self.message[:200]}"
        return f"gatewayapi 0x{self.code:04X}: {self.message[:200]}"


class RecipientRefused(GatewayRejected):
    """GatewayAPI refused a whole request because of one recipient (403 with a recipient code).
    Internal to the adapter, which takes the recipient out and sends the rest again."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.describe())
        self.error = error

    @property
    def temporary(self) -> bool:
        return self.error.code == TEMPORARY_BLACKLIST

    def named(self, recipients: Sequence[Recipient]) -> list[Recipient]:
        """The recipients the error names (by MSISDN, or by country); empty when it does not
        say which (an operator: the adapter then halves the request until it finds them)."""
        if not self.error.variables:
            return []
        value = self.error.variables[0].strip().lstrip("+")
        if self.error.code in (TEMPORARY_BLACKLIST, BLACKLISTED):
            return [r for r in recipients if str(r[2]) == value]
        if self.error.code == UNAUTHORISED_COUNTRY:
            return [r for r in recipients if _in_country(r[2], value)]
        return []


def read_error(status: int, raw: bytes) -> ApiError:
    """The code, message and variables of an error answer (what is there of them)."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return ApiError(status, None, raw.decode("utf-8", "replace"), ())
    variables = data.get("variables")
    return ApiError(
        status,
        _code(data.get("code")),
        str(data.get("message") or ""),
        tuple(str(v) for v in variables) if isinstance(variables, list) else (),
    )


def error_for_answer(status: int, raw: bytes, retry_after: str | None) -> GatewayError:
    """The error a non-2xx answer stands for (`RecipientRefused` for one recipient)."""
    error = read_error(status, raw)
    if error.code in RECIPIENT_CODES:
        return RecipientRefused(error)
    if error.code in CONFIG_CODES:
        return GatewayMisconfigured(error.describe())
    mapped = error_for_status(status, raw.decode("utf-8", "replace"), retry_after)
    if error.code is not None and not isinstance(mapped, GatewayMisconfigured):
        mapped.args = (f"{error.describe()} (HTTP {status})",)
    return mapped


def _code(value: Any) -> int | None:
    """'0x0215' (as GatewayAPI writes it), '533' or 533 -> 533."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            return None
    return None


def _in_country(msisdn: int, country: str) -> bool:
    """Whether the MSISDN belongs to `country`: an ISO 3166 alpha-2 code ('SE') or a country
    calling code ('46')."""
    if country.isdigit():
        return str(msisdn).startswith(country)
    import phonenumbers  # only on this rare error path

    try:
        number = phonenumbers.parse(f"+{msisdn}")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.region_code_for_number(number) == country.upper()
