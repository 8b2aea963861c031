"""Inbound SMS in each HTTP gateway's own wire format, table-driven: a webhook request in, the
`InboundMessage` (or the refusal) out. GatewayAPI's MO webhook is JSON signed with a JWT
(X-Gwapi-Signature), Twilio's incoming-message webhook a form signed with X-Twilio-Signature
(checked against Twilio's own RequestValidator)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from twilio import request_validator

from gateway_adapters.base import CallbackRejected, GatewayConfig, InboundMessage, clean_text
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_adapters.smpp import SmppAdapter
from gateway_adapters.twilio import EMPTY_TWIML, TwilioAdapter, inbound_url

SECRET = "inbound-webhook-secret-0123456789abcdef"
ACCOUNT, AUTH_TOKEN = "ACinbound", "inbound-auth-token"
PUBLIC = "https://broadcaster.example.dk"

# -- GatewayAPI -----------------------------------------------------------------------------------

MO = {
    "id": 1000123,
    "msisdn": 4520123456,
    "receiver": 4570000000,
    "message": "Stop.",
    "senttime": 1763900000,
    "webhook_label": "broadcaster",
}


def gatewayapi() -> GatewayApiAdapter:
    config = GatewayConfig(
        name="primary", type="gatewayapi", base_url="http://unused", webhook_secret=SECRET
    )
    return GatewayApiAdapter(config, f"{PUBLIC}/v1/callbacks/primary")


def jwt_headers(claims: dict[str, Any], secret: str = SECRET) -> dict[str, str]:
    return {"X-Gwapi-Signature": jwt.encode(claims, secret, algorithm="HS256")}


def test_gatewayapi_mo_sms_is_read_from_the_signed_claims() -> None:
    (message,) = gatewayapi().parse_inbound(jwt_headers(MO), json.dumps(MO).encode(), "")
    assert message == InboundMessage(
        gateway_message_id="1000123",
        phone="+4520123456",
        text="Stop.",
        sent_at=datetime.fromtimestamp(1763900000, tz=UTC),
        raw={k: v for k, v in MO.items() if k not in ("msisdn", "message")},
    )
    # The sender's number is kept in `phone` only.
    assert "4520123456" not in json.dumps(dict(message.raw))
    assert gatewayapi().inbound_reply(1) == ("application/json", b'{"received":1}')


@pytest.mark.parametrize(
    ("body", "claims", "status", "why"),
    [
        (MO, None, 401, "missing X-Gwapi-Signature"),
        (MO, "wrong-secret", 401, "invalid signature"),
        ({**MO, "message": "HELP"}, MO, 401, "message differs from signed claims"),
        ({**MO, "msisdn": 4520999999}, MO, 401, "msisdn differs"),
        ({**MO, "id": 1}, MO, 401, "id differs"),
        ({k: v for k, v in MO.items() if k != "id"}, MO, 400, "missing id"),
        (MO, {k: v for k, v in MO.items() if k != "message"}, 400, "missing message"),
        ({**MO, "msisdn": "POLITI"}, {**MO, "msisdn": "POLITI"}, 400, "not a phone number"),
        ({**MO, "msisdn": 12}, {**MO, "msisdn": 12}, 400, "not a phone number"),
        ({**MO, "message": 7}, {**MO, "message": 7}, 400, "not a text"),
        ("[1, 2]", MO, 400, "not a JSON object"),
        ("{", MO, 400, "not JSON"),
        ("[" * 100_000 + "]" * 100_000, MO, 400, "not JSON"),  # nested past the recursion limit
    ],
)
def test_gatewayapi_mo_sms_refused(body: Any, claims: Any, status: int, why: str) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    if claims is None:
        headers: dict[str, str] = {}
    elif claims == "wrong-secret":
        headers = jwt_headers(MO, "another-secret-of-at-least-32-bytes!")
    else:
        headers = jwt_headers(claims)
    with pytest.raises(CallbackRejected, match=why) as info:
        gatewayapi().parse_inbound(headers, raw, "")
    assert info.value.status == status


def test_gatewayapi_empty_message_and_odd_text_are_kept_storable() -> None:
    for text, stored in [
        ("", ""),
        ("a\x00b", "ab"),
        ("Tip: 🚐 ved stationen", "Tip: 🚐 ved stationen"),
    ]:
        mo = {**MO, "message": text}
        (message,) = gatewayapi().parse_inbound(jwt_headers(mo), json.dumps(mo).encode(), "")
        assert message.text == stored
    assert clean_text("x\ud800y") == "x\ufffdy"


# -- Twilio ---------------------------------------------------------------------------------------


def twilio() -> TwilioAdapter:
    config = GatewayConfig(
        name="tw", type="twilio", base_url="https://api.twilio.com", token=f"{ACCOUNT}:{AUTH_TOKEN}"
    )
    return TwilioAdapter(config, f"{PUBLIC}/v1/callbacks/tw")


INCOMING = {
    "ToCountry": "DK",
    "SmsMessageSid": "SM0123456789abcdef0123456789abcdef",
    "NumMedia": "0",
    "SmsSid": "SM0123456789abcdef0123456789abcdef",
    "SmsStatus": "received",
    "Body": " hjælp ",
    "To": "+4570000000",
    "NumSegments": "1",
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "AccountSid": ACCOUNT,
    "From": "+4520123456",
    "ApiVersion": "2010-04-01",
}
URL = f"{PUBLIC}/v1/inbound/tw"


def twilio_headers(params: dict[str, str], url: str = URL) -> dict[str, str]:
    validator = request_validator.RequestValidator(AUTH_TOKEN)
    return {"X-Twilio-Signature": validator.compute_signature(url, params)}


def test_twilio_incoming_message_is_read_and_answered_with_empty_twiml() -> None:
    body = urlencode(INCOMING).encode()
    (message,) = twilio().parse_inbound(twilio_headers(INCOMING), body, URL)
    assert (message.gateway_message_id, message.phone, message.text) == (
        INCOMING["MessageSid"],
        "+4520123456",
        " hjælp ",
    )
    assert message.sent_at is None
    assert "From" not in message.raw and "Body" not in message.raw
    assert message.raw["To"] == "+4570000000"
    assert twilio().inbound_reply(1) == ("text/xml", EMPTY_TWIML)
    assert EMPTY_TWIML.endswith(b"<Response/>")


def test_twilio_signature_of_the_configured_url_holds_behind_a_proxy() -> None:
    # The API behind an ingress sees http://10.0.0.7:8000/...; Twilio signed the public URL.
    body = urlencode(INCOMING).encode()
    seen = "http://10.0.0.7:8000/v1/inbound/tw"
    (message,) = twilio().parse_inbound(twilio_headers(INCOMING, URL), body, seen)
    assert message.phone == "+4520123456"
    # ... and with the default port written out, as Twilio sometimes signs it.
    with_port = f"{PUBLIC}:443/v1/inbound/tw"
    assert twilio().parse_inbound(twilio_headers(INCOMING, with_port), body, seen)
    assert inbound_url(f"{PUBLIC}/v1/callbacks/tw") == URL


@pytest.mark.parametrize(
    ("params", "headers", "status", "why"),
    [
        (INCOMING, {}, 401, "missing X-Twilio-Signature"),
        (INCOMING, {"X-Twilio-Signature": "bm90IGl0"}, 401, "invalid X-Twilio-Signature"),
        (INCOMING, "other-url", 401, "invalid X-Twilio-Signature"),
        ({**INCOMING, "AccountSid": "ACother"}, None, 401, "another account"),
        ({k: v for k, v in INCOMING.items() if k != "From"}, None, 400, "missing From"),
        (
            {k: v for k, v in INCOMING.items() if k not in ("MessageSid", "SmsSid")},
            None,
            400,
            "missing MessageSid",
        ),
        ({**INCOMING, "From": "POLITI"}, None, 400, "not a phone number"),
    ],
)
def test_twilio_incoming_message_refused(params: Any, headers: Any, status: int, why: str) -> None:
    body = urlencode(params).encode()
    if headers is None:
        headers = twilio_headers(params)
    elif headers == "other-url":
        headers = twilio_headers(params, f"{PUBLIC}/v1/callbacks/tw")
    with pytest.raises(CallbackRejected, match=why) as info:
        twilio().parse_inbound(headers, body, URL)
    assert info.value.status == status


def test_twilio_body_tampered_after_signing_is_refused() -> None:
    headers = twilio_headers(INCOMING)
    tampered = urlencode({**INCOMING, "Body": "START"}).encode()
    with pytest.raises(CallbackRejected, match="invalid"):
        twilio().parse_inbound(headers, tampered, URL)


# -- SMPP -----------------------------------------------------------------------------------------


def test_smpp_inbound_messages_do_not_come_over_http() -> None:
    config = GatewayConfig(name="smsc", type="smpp", base_url="smpp://127.0.0.1:2775", token="a:b")
    with pytest.raises(CallbackRejected) as info:
        SmppAdapter(config, "").parse_inbound({}, b"", "")
    assert info.value.status == 404
