"""GatewayAPI delivery receipts: the status words, and the verification and reading of the
JWT-signed callbacks (one per recipient, signed with HS256 by the webhook's authentication token).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt

from gateway_adapters.base import (
    CallbackRejected,
    DeliveryState,
    InboundMessage,
    ReceiptUpdate,
    clean_text,
)

SIGNATURE_HEADER = "x-gwapi-signature"
# RFC 7518 3.2: an HS256 key should be at least as long as the hash. PyJWT >= 2.10 warns on every
# call otherwise; we say it once per adapter instead (older PyJWT has no such warning).
MIN_SECRET_BYTES = 32
SHORT_KEY_WARNING: type[Warning] = getattr(jwt, "InsecureKeyLengthWarning", UserWarning)

# Provider status word -> our state. Anything not final maps to SENT so it never closes a delivery.
STATUS_MAP: dict[str, DeliveryState] = {
    "DELIVERED": DeliveryState.DELIVERED,
    "UNDELIVERABLE": DeliveryState.FAILED,
    "REJECTED": DeliveryState.FAILED,
    "DELETED": DeliveryState.FAILED,
    "SKIPPED": DeliveryState.FAILED,
    "EXPIRED": DeliveryState.EXPIRED,
    "UNKNOWN": DeliveryState.SENT,
    "SCHEDULED": DeliveryState.SENT,
    "BUFFERED": DeliveryState.SENT,
    "ENROUTE": DeliveryState.SENT,
    # Final per GatewayAPI: the mobile network accepted it on the end user's behalf.
    "ACCEPTED": DeliveryState.DELIVERED,
}


def state_for_status(status: str) -> DeliveryState:
    """Our state for a provider status word; unknown words are transient (SENT)."""
    return STATUS_MAP.get(status.strip().upper(), DeliveryState.SENT)


# Fields the body must carry and must agree on with the signed claims.
_REQUIRED = ("id", "msisdn", "status")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # fast path for CIMultiDict and exact-case dicts
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


# Registered claims PyJWT checks when present (expiry, audience, ...): tokens carrying any of
# them are left to PyJWT.
_PYJWT_CHECKED_CLAIMS = frozenset({"exp", "nbf", "iat", "aud", "iss", "sub", "jti"})
# JOSE header segments seen, and whether each is a plain {"alg": "HS256"[, "typ": ...]}; every
# token of a gateway carries the same one, so this stays tiny (and is capped).
_PLAIN_HS256_HEADERS: dict[bytes, bool] = {}
_MAX_HEADERS_CACHED = 64


def _hs256_key(secret: str) -> bytes | None:
    """The HMAC key for the fast path, or None when PyJWT would refuse the secret as an HMAC
    key (empty, or a PEM/SSH public key): then every token goes to PyJWT, which refuses it."""
    if not secret:
        return None
    try:
        jwt.algorithms.get_default_algorithms()["HS256"].prepare_key(secret)
    except jwt.PyJWTError:
        return None
    return secret.encode()


def _b64url_decode(segment: bytes) -> bytes | None:
    """Unpadded base64url in canonical form, as PyJWT accepts it; None for anything else."""
    if len(segment) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    # Rejects non-alphabet characters (which the decoder skips) and non-canonical trailing bits.
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=") == segment else None


def _is_plain_hs256_header(segment: bytes) -> bool:
    raw = _b64url_decode(segment)
    if raw is None:
        return False
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(header, dict)
        and header.get("alg") == "HS256"
        and header.keys()
        <= {
            "alg",
            "typ",
        }
    )


def _verified_claims(token: str, key: bytes) -> dict[str, Any] | None:
    """The claims of a JWT in the plain form GatewayAPI sends (header {"alg": "HS256", "typ":
    "JWT"}, unpadded base64url, a JSON object without registered claims) when its HS256
    signature is valid; None for anything else, which then goes to PyJWT. PyJWT accepts every
    token accepted here with the same claims; this only skips its generality (about 10x
    faster, and receipts come one request per SMS)."""
    data = token.encode()
    head, dot, rest = data.partition(b".")
    payload, dot2, signature = rest.partition(b".")
    if not dot or not dot2:
        return None
    plain = _PLAIN_HS256_HEADERS.get(head)
    if plain is None:
        plain = _is_plain_hs256_header(head)
        if len(_PLAIN_HS256_HEADERS) < _MAX_HEADERS_CACHED:
            _PLAIN_HS256_HEADERS[head] = plain
    if not plain:
        return None
    digest = hmac.digest(key, data[: len(head) + 1 + len(payload)], "sha256")
    if not hmac.compare_digest(base64.urlsafe_b64encode(digest).rstrip(b"="), signature):
        return None
    raw = _b64url_decode(payload)
    if raw is None:
        return None
    try:
        claims = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(claims, dict) or not _PYJWT_CHECKED_CLAIMS.isdisjoint(claims):
        return None
    return claims


def _verified(secret: str, headers: Mapping[str, str], hs256_key: bytes | None) -> dict[str, Any]:
    """The claims of the request's X-Gwapi-Signature, or `CallbackRejected` (401)."""
    token = _header(headers, SIGNATURE_HEADER)
    if not secret:
        raise CallbackRejected("no webhook secret configured", status=401)
    if not token:
        raise CallbackRejected("missing X-Gwapi-Signature", status=401)
    token = token.strip()
    claims = _verified_claims(token, hs256_key) if hs256_key is not None else None
    if claims is None:
        # Anything but a plain valid token: PyJWT decides, and words the refusal.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SHORT_KEY_WARNING)
                claims = jwt.decode(token, secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:  # InvalidTokenError and key errors alike
            raise CallbackRejected(f"invalid signature: {exc}", status=401) from exc
    return claims


def _parse_callback(
    secret: str, headers: Mapping[str, str], body: bytes, hs256_key: bytes | None = None
) -> ReceiptUpdate:
    # Authenticate before reading the body, so unsigned requests learn nothing about the format.
    claims = _verified(secret, headers, hs256_key)
    data = _json_object(body)
    for source in (data, claims):
        missing = [k for k in _REQUIRED if source.get(k) in (None, "")]
        if missing:
            raise CallbackRejected(f"missing {', '.join(missing)}", status=400)
    for key in _REQUIRED:
        if str(data[key]) != str(claims[key]):
            raise CallbackRejected(f"body {key} differs from signed claims", status=401)

    # From here on only the signed claims are used.
    msisdn = str(claims["msisdn"]).lstrip("+")
    if not msisdn.isascii() or not msisdn.isdigit():
        raise CallbackRejected("msisdn is not a number", status=400)
    status = str(claims["status"])
    return ReceiptUpdate(
        gateway_message_id=str(claims["id"]),
        phone="+" + msisdn,
        state=state_for_status(status),
        provider_status=status,
        error=_error_text(claims.get("error"), claims.get("code")),
        occurred_at=_timestamp(claims.get("time")),
        raw=claims,
        known_status=status.strip().upper() in STATUS_MAP,
    )


# An MO SMS (GatewayAPI's "Receiving SMS": a webhook posts one JSON object per message, signed
# like receipts): `id` of the MO SMS, `msisdn` of the sender, `receiver` (our number or short
# code), `message` (the text, keyword included), `senttime` (UNIX time), `webhook_label`, and
# optionally `sender`, `mcc`, `mnc`, `encoding`, `udh`, `payload`, `country_code`, ...
_MO_REQUIRED = ("id", "msisdn", "message")


def _parse_inbound(
    secret: str, headers: Mapping[str, str], body: bytes, hs256_key: bytes | None = None
) -> InboundMessage:
    """Verify one JWT-signed MO SMS and translate it; `CallbackRejected` if it fails. The
    signed claims must carry the id, number and text the body carries, and only they are
    read."""
    claims = _verified(secret, headers, hs256_key)
    data = _json_object(body)
    for source in (data, claims):
        # An empty message is a message (an empty SMS); an empty id or number is not.
        missing = [
            k for k in _MO_REQUIRED if source.get(k) is None or (k != "message" and source[k] == "")
        ]
        if missing:
            raise CallbackRejected(f"missing {', '.join(missing)}", status=400)
    for key in _MO_REQUIRED:
        if str(data[key]) != str(claims[key]):
            raise CallbackRejected(f"body {key} differs from signed claims", status=401)
    # From here on only the signed claims are used.
    msisdn = str(claims["msisdn"]).strip().lstrip("+")
    if not (msisdn.isascii() and msisdn.isdigit() and 7 <= len(msisdn) <= 15):
        raise CallbackRejected("msisdn is not a phone number", status=400)
    message = claims["message"]
    if not isinstance(message, str):
        raise CallbackRejected("message is not a text", status=400)
    return InboundMessage(
        gateway_message_id=str(claims["id"]),
        phone="+" + msisdn,
        text=clean_text(message),
        sent_at=_timestamp(claims.get("senttime")),
        raw={k: v for k, v in claims.items() if k not in ("msisdn", "message")},
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CallbackRejected("body is not JSON", status=400) from exc
    if not isinstance(data, dict):
        raise CallbackRejected("body is not a JSON object", status=400)
    return data


def _error_text(error: Any, code: Any) -> str | None:
    error = str(error) if error not in (None, "") else None
    code = str(code) if code not in (None, "") else None
    if error and code:
        return f"{error} (code {code})"
    return error or code


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
