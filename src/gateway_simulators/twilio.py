"""A Twilio-compatible SMS gateway simulator over real HTTP, for the demo, tests and benchmarks.

It accepts `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` like Twilio (form-encoded, HTTP
Basic auth, one recipient per request), answers 201 with a message SID, and posts signed,
form-encoded status callbacks to the request's `StatusCallback` through a bounded worker pool.
`/_sim/*` endpoints let tests inspect what was accepted and control held callbacks, and
`POST /_sim/inbound` posts a citizen's SMS to `--inbound-url` as Twilio's incoming-message
webhook does.

Run: `python -m gateway_simulators.twilio --port 0`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hmac
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from gateway_adapters.twilio import API_VERSION, MESSAGING_SERVICE_PREFIX, split_token
from gateway_adapters.twilio_callbacks import is_e164, twilio_signature
from gateway_adapters.twilio_errors import QUEUE_FULL_CODE, THROTTLE_CODE
from gateway_simulators.common import (
    CALLBACK_BACKOFF_SECONDS,
    CALLBACK_RETRIES,
    HttpGatewaySimulator,
    HttpStats,
    ReceiptJob,
    add_fault_options,
    http_serve,
    options_from_args,
    serve_http_until_signalled,
    simulator_parser,
)
from gateway_simulators.http_server import (
    Answer,
    Request,
    Response,
    http_date,
    json_response,
    post,
)

log = logging.getLogger(__name__)

FAILURE_STATUS = "undelivered"
FAILURE_CODE = "30003"  # Twilio: unreachable destination handset
RETRY_AFTER_SECONDS = "1"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
FORM_TYPE = "application/x-www-form-urlencoded"
QUEUE_FULL = "This 'From' number has exceeded the maximum number of queued messages"
MAX_VALIDITY = 36_000  # seconds: Twilio's longest ValidityPeriod (and its default)


@dataclass
class TwilioSimulatorOptions:
    """How the simulated gateway behaves."""

    token: str = "ACsim:authsim"  # AccountSid:AuthToken
    latency_ms: float = 0.0
    failure_ratio: float = 0.0  # answer 500
    throttle_ratio: float = 0.0  # answer 429 / 20429
    invalid_ratio: float = 0.0  # answer 400 / 21211 for a well-formed request
    drop_ratio: float = 0.0  # close the connection without answering
    delivered_ratio: float = 1.0
    receipt_delay_ms: float = 200.0
    queue_full_ratio: float = 0.0  # answer 400 / 21611 (the sender's queue is full)
    send_sent: bool = False
    hold_receipts: bool = False
    receipt_concurrency: int = 32
    seed: int | None = None
    # Numbers that answered STOP to the sender: refused at once (400 / 21610), or, for those in
    # `opted_out_later`, accepted and then reported failed with ErrorCode 21610 in the status
    # callback (as Twilio does for a Messaging Service). `senders`: the From numbers and
    # Messaging Service SIDs the account has (empty: any); others are refused with 21659 or
    # 21701, as a misconfigured sender is.
    opted_out: tuple[str, ...] = ()
    opted_out_later: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    # Where POST /_sim/inbound posts a citizen's SMS (the number's "A message comes in"
    # webhook), and our number it was sent to.
    inbound_url: str | None = None
    inbound_to: str = "+4570000000"


class _Stats(HttpStats):
    # `recipients` counts accepted messages (named like the GatewayAPI simulator's stats).
    def __init__(self) -> None:
        super().__init__()
        self.throttled_requests = 0


_ReceiptJob = ReceiptJob[dict[str, str]]


class _Refusal(Exception):
    """An error answer: HTTP status, Twilio error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class TwilioSimulator(HttpGatewaySimulator[dict[str, str]]):
    """The simulator's state and HTTP app; `start()` binds it, `close()` stops everything."""

    def __init__(self, options: TwilioSimulatorOptions | None = None) -> None:
        self.options = options or TwilioSimulatorOptions()
        super().__init__(self.options)
        self.account_sid, self.auth_token = split_token(self.options.token)
        self.stats = _Stats()
        self.messages: list[dict[str, Any]] = []
        self._rng = random.Random(self.options.seed)
        # Message SIDs are "SM" and 32 hex digits, as Twilio's: a random half per run and a
        # counter (uuid4 per message was a tenth of the simulator's CPU).
        self._sid_prefix = f"SM{random.getrandbits(64):016x}"
        self._sid_counter = itertools.count(1)
        self._account_json = _js(self.account_sid)
        self._uri_json = _js(f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/")[:-1]
        self._credentials = f"{self.account_sid}:{self.auth_token}".encode()
        self._basic = b"Basic " + base64.b64encode(self._credentials)
        self.router.add(
            [
                post(f"/{API_VERSION}/Accounts/{{sid}}/Messages.json", self._handle_send),
                *self._inspection_routes(),
                *self._control_routes(),
            ]
        )

    # -- sending ---------------------------------------------------------------------------------

    def _handle_send(self, request: Request) -> Answer | Awaitable[Answer]:
        return self._count_and_answer(self.options.latency_ms, self._send, request)

    def _send(self, request: Request) -> Answer:
        try:
            if not self._authorized(request.headers.get("authorization", "")):
                raise _Refusal(401, 20003, "Authenticate")
            if request.params["sid"] != self.account_sid:
                raise _Refusal(404, 20404, "The requested resource was not found")
            if self._rng.random() < self.options.failure_ratio:
                raise _Refusal(500, 20500, "Internal Server Error (simulated)")
            if self.options.drop_ratio and self._rng.random() < self.options.drop_ratio:
                self.stats.rejected_requests += 1
                request.transport.close()  # the client sees the connection closed, no answer
                return None
            if self._rng.random() < self.options.throttle_ratio:
                self.stats.throttled_requests += 1
                raise _Refusal(429, THROTTLE_CODE, "Too Many Requests (simulated)")
            form = self._validate(_form(request))
            self._check_account(form)
            if self._rng.random() < self.options.invalid_ratio:
                raise _Refusal(400, 21211, "The 'To' number is not a valid phone number.")
            if self.options.queue_full_ratio and self._rng.random() < self.options.queue_full_ratio:
                raise _Refusal(400, QUEUE_FULL_CODE, QUEUE_FULL)
        except _Refusal as refusal:
            return self._reject(refusal)

        sid = f"{self._sid_prefix}{next(self._sid_counter):016x}"
        self.stats.recipients += 1
        validity = form.get("ValidityPeriod")
        self.messages.append(
            {
                "sid": sid,
                "to": form["To"],
                "body": form["Body"],
                "validity_period": int(validity) if validity else None,
            }
        )
        callback_url = form.get("StatusCallback")
        if callback_url:
            self._schedule_receipts(sid, form, callback_url)
        log.debug("accepted message %s", sid)
        now = http_date()  # Twilio writes its dates in RFC 2822 form, in GMT
        # Twilio's Message resource, its fields in Twilio's order.
        # `To` passed is_e164 ('+' and digits), the SID is hex: both go in without escaping.
        body = (
            f'{{"sid": "{sid}", "account_sid": {self._account_json}, "to": "{form["To"]}", '
            f'"from": {_js(form.get("From"))}, '
            f'"messaging_service_sid": {_js(form.get("MessagingServiceSid"))}, '
            f'"body": {_js(form["Body"])}, "status": "queued", "num_segments": "1", '
            f'"direction": "outbound-api", "api_version": "{API_VERSION}", '
            f'"date_created": "{now}", "date_updated": "{now}", "date_sent": null, '
            f'"price": null, "error_code": null, "error_message": null, '
            f'"uri": {self._uri_json}{sid}.json"}}'
        )
        return Response(201, body.encode())

    def _authorized(self, header: str) -> bool:
        if hmac.compare_digest(header.encode(), self._basic):  # as every client writes it
            return True
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded, self._credentials)

    def _reject(self, refusal: _Refusal) -> Response:
        self.stats.rejected_requests += 1
        headers = (("Retry-After", RETRY_AFTER_SECONDS),) if refusal.status == 429 else ()
        body = {
            "code": refusal.code,
            "message": refusal.message,
            "more_info": MORE_INFO.format(code=refusal.code),
            "status": refusal.status,
        }
        return json_response(body, refusal.status, headers)

    @staticmethod
    def _validate(form: Mapping[str, Any]) -> dict[str, str]:
        """The form's string fields, or `_Refusal` (400 with Twilio's code) for a bad request."""
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        to = fields.get("To", "")
        if not to:
            raise _Refusal(400, 21604, "A 'To' phone number is required.")
        if not is_e164(to):
            raise _Refusal(400, 21211, "The 'To' number is not a valid phone number.")
        if not fields.get("Body"):
            raise _Refusal(400, 21602, "Message body is required.")
        service = fields.get("MessagingServiceSid")
        if not fields.get("From") and not service:
            raise _Refusal(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        if service and not service.startswith(MESSAGING_SERVICE_PREFIX):
            raise _Refusal(400, 21705, "The Messaging Service is invalid")
        callback = fields.get("StatusCallback")
        if callback and not callback.startswith(("http://", "https://")):
            raise _Refusal(400, 21609, "The StatusCallback URL is not a valid URL.")
        validity = fields.get("ValidityPeriod")
        if validity is not None and not (
            validity.isascii() and validity.isdigit() and 1 <= int(validity) <= MAX_VALIDITY
        ):
            raise _Refusal(400, 21624, "Invalid validity period value")
        return fields

    def _check_account(self, form: Mapping[str, str]) -> None:
        """Refuse, as Twilio does, a sender the account does not have and a recipient who
        answered STOP to it."""
        senders = self.options.senders
        service = form.get("MessagingServiceSid")
        if senders and service and service not in senders:
            raise _Refusal(400, 21701, "The Messaging Service does not exist")
        sender = form.get("From")
        if senders and not service and sender not in senders:
            raise _Refusal(400, 21659, "'From' is not a Twilio phone number or Short Code")
        if form["To"] in self.options.opted_out:
            raise _Refusal(400, 21610, "Attempt to send to unsubscribed recipient")

    # -- status callbacks ------------------------------------------------------------------------

    def _schedule_receipts(self, sid: str, form: dict[str, str], callback_url: str) -> None:
        job: _ReceiptJob = ReceiptJob(callback_url)  # the bare class: a generic alias call is slow
        if self.options.send_sent:
            job.payloads.append(self._callback(sid, form, "sent"))
        if form["To"] in self.options.opted_out_later:
            job.payloads.append(self._callback(sid, form, "failed", "21610"))
        elif self._rng.random() < self.options.delivered_ratio:
            job.payloads.append(self._callback(sid, form, "delivered"))
        else:
            job.payloads.append(self._callback(sid, form, FAILURE_STATUS, FAILURE_CODE))
        self._schedule_jobs([job])

    def _callback(
        self, sid: str, form: dict[str, str], status: str, error_code: str | None = None
    ) -> dict[str, str]:
        """The parameters Twilio posts to a StatusCallback."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": form["To"],
        }
        if form.get("From"):
            params["From"] = form["From"]
        if form.get("MessagingServiceSid"):
            params["MessagingServiceSid"] = form["MessagingServiceSid"]
        if error_code:
            params["ErrorCode"] = error_code
        return params

    async def _post_receipt(self, url: str, params: dict[str, str]) -> bool:
        """POST one signed callback, retrying a few times; True once the receiver took it."""
        signature = twilio_signature(self.auth_token, url, params)
        request = {"data": params, "headers": {"X-Twilio-Signature": signature}}
        policy = (CALLBACK_RETRIES, CALLBACK_BACKOFF_SECONDS, log)
        what = f"a status callback for message {params['MessageSid']}"
        return await self._post_with_retries(url, request, policy, what)

    # -- inbound messages ------------------------------------------------------------------------

    def _inbound_request(
        self, url: str, sender: str, text: str, message_id: str | None
    ) -> tuple[str, dict[str, Any]]:
        """An incoming message as Twilio posts it: a form signed with X-Twilio-Signature."""
        sid = message_id or f"{self._sid_prefix}{next(self._sid_counter):016x}"
        if not is_e164(sender):
            raise ValueError("from must be E.164")
        params = {
            "ToCountry": "DK",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": text,
            "To": self.options.inbound_to,
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": sender,
            "ApiVersion": API_VERSION,
        }
        signature = twilio_signature(self.auth_token, url, params)
        return sid, {"data": params, "headers": {"X-Twilio-Signature": signature}}

    # -- inspection ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self.messages.clear()
        self.stats = _Stats()


# `serve(options, host, port, *, ready, stop)`: serve until `stop` is set (or forever);
# `ready(port)` is called once bound.
serve = http_serve(TwilioSimulator)


# -- command line --------------------------------------------------------------------------------


def _token(value: str) -> str:
    try:
        split_token(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    defaults = TwilioSimulatorOptions()
    parser = simulator_parser(
        "broadcaster simulate-gateway", "Run a Twilio-compatible SMS gateway simulator."
    )
    add = parser.add_argument
    add("--token", type=_token, default=defaults.token, help="expected ACCOUNT_SID:AUTH_TOKEN")
    add_fault_options(
        parser,
        defaults,
        [
            ("failure", "answer 500"),
            ("throttle", "answer 429"),
            ("invalid", "answer 400/21211"),
            ("queue-full", "answer 400/21611 (the sender's queue is full)"),
            ("drop", "drop the connection"),
        ],
    )
    add("--receipt-concurrency", type=_positive_int, default=defaults.receipt_concurrency)
    add("--send-sent", action="store_true", help="post 'sent' before each final status")
    add("--hold-receipts", action="store_true", help="keep callbacks until POST /_sim/release")
    add("--inbound-url", default=None, help="where POST /_sim/inbound posts incoming messages")
    add(
        "--opted-out",
        type=_numbers,
        default=(),
        help="comma-separated numbers that answered STOP: refused with 400 / 21610",
    )
    add(
        "--opted-out-later",
        type=_numbers,
        default=(),
        help="comma-separated numbers accepted, then reported failed with ErrorCode 21610",
    )
    add(
        "--senders",
        type=_numbers,
        default=(),
        help="the account's From numbers and Messaging Service SIDs (others: 21659 / 21701)",
    )
    add("--seed", type=int, default=None, help="seed for reproducible outcomes")
    return parser


def _numbers(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@functools.lru_cache(maxsize=256)
def _js(value: str | None) -> str:
    """A JSON string (or null) for a value of the response (a broadcast repeats its text and
    sender in every answer)."""
    return "null" if value is None else json.dumps(value)


def _form(request: Request) -> Mapping[str, Any]:
    """The request's form fields: Twilio takes a form-encoded body (UTF-8); anything else has
    none, and the missing `To` is refused as Twilio refuses it."""
    if request.content_type != FORM_TYPE:
        return {}
    try:
        text = request.body.decode()
    except UnicodeDecodeError:
        return {}
    fields = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            fields[_unquote(name)] = _unquote(value)
    return fields


# Names, the text and the sender repeat in every request of a broadcast; only `To` changes.
_unquote = functools.lru_cache(maxsize=1024)(unquote_plus)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; serves until SIGTERM or SIGINT."""
    args = build_parser().parse_args(argv)
    options = options_from_args(TwilioSimulatorOptions, args)
    return serve_http_until_signalled(serve, options, args.host, args.port)


if __name__ == "__main__":
    raise SystemExit(main())
