"""An SMSC simulator speaking SMPP 3.4 over TCP, for tests, the demo and benchmarks.

It answers as SMPP 3.4 has an SMSC answer: bind_transceiver, bind_transmitter and bind_receiver
(checking system_id and password; one account may hold binds of each kind at once); submit_sm
from a transmitter or transceiver only (a receiver gets ESME_RINVBNDSTS), deliver_sm to a
receiver or transceiver only. Long messages are reassembled from UDH parts or from sar_* TLVs
and recorded whole, with their parts' ids and receipt outcomes.

Ids are written as the options say: by default in upper-case hex in submit_sm_resp and in
zero-padded decimal in the receipt text (the style Kannel's msg-id-type 1 is for), and every
receipt carries receipted_message_id with the id exactly as submit_sm_resp gave it, and
message_state (SMPP 3.4 section 5.3.2.12 and 5.3.2.35). One delivery receipt per accepted part
goes out as deliver_sm, in ASCII, or in UCS-2 when the text snippet has characters ASCII lacks.
A receipt counts as delivered only once the client answers its deliver_sm with ESME_ROK; refused
or unanswered receipts are sent again, after a reconnect if need be.

Receipts go out `receipt_window` unanswered at most (over all connections), as an SMSC's window
for deliver_sm. The simulator is the load generator of the receipt benchmark, so sending is
cheap: each receipt's addresses and text snippet are encoded once when it is created, and as many
deliver_sm as the window allows go out in one write.

The simulator is in parts: connections, binds and controls here, submit_sm handling in
`smpp_submits`, receipts sent in `smpp_receipt_sending` (built in `smpp_receipts`), inbound
messages built in `smpp_mo`, its options and counters in `smpp_options`.

In-process: `SmscSimulator(...).start()`, then `.messages`, `.stats`, `.release()`, `.reset()`,
`.drop_connections(role)` and `.deliver_mo(...)` (a mobile-originated message to the client, in
parts by UDH or sar_* TLVs when it is long).
As a process: `python -m gateway_simulators.smpp --port 0 [--http-port 0]`; the HTTP side
port serves GET /_sim/messages, GET /_sim/stats, POST /_sim/release, POST /_sim/reset,
POST /_sim/disconnect (drop every SMPP connection) and POST /_sim/inbound (a citizen's SMS).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hmac
import itertools
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any

from aiohttp import web

from gateway_adapters.smpp_codec import (
    BIND_ANSWERS,
    ESME_RALYBND,
    ESME_RBINDFAIL,
    ESME_RINVCMDID,
    ESME_ROK,
    GENERIC_NACK,
    HEADER,
    RESPONSE_BIT,
    Bind,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    EnquireLink,
    EnquireLinkResp,
    FrameReader,
    GenericNack,
    PduError,
    SubmitSm,
    Unbind,
    UnbindResp,
    decode,
)
from gateway_simulators.common import (
    add_fault_options,
    notify_ready,
    options_from_args,
    port,
    run_until_signalled,
    simulator_parser,
)
from gateway_simulators.smpp_mo import mo_pdus
from gateway_simulators.smpp_options import SmscOptions, SmscStats
from gateway_simulators.smpp_receipt_sending import ReceiptSending
from gateway_simulators.smpp_receipts import Receipt
from gateway_simulators.smpp_session import Session
from gateway_simulators.smpp_submits import Partial, SubmitHandling

__all__ = ["SmscOptions", "SmscSimulator", "SmscStats", "build_parser", "main", "serve"]

log = logging.getLogger(__name__)

SMSC_SYSTEM_ID = "SMSCSIM"
ROLES: dict[type[Bind], str] = {
    BindTransceiver: "transceiver",
    BindTransmitter: "transmitter",
    BindReceiver: "receiver",
}


class SmscSimulator(SubmitHandling, ReceiptSending):
    """The simulator's state and servers; `start()` binds it, `close()` stops everything."""

    def __init__(self, options: SmscOptions | None = None) -> None:
        self.options = options or SmscOptions()
        self.stats = SmscStats()
        self.messages: list[dict[str, Any]] = []
        self._rng = random.Random(self.options.seed)
        self._ids = itertools.count(self.options.first_message_id)
        self._sessions: set[Session] = set()
        self._partials: dict[tuple[str, str, int, int], Partial] = {}
        self._ready: collections.deque[Receipt] = collections.deque()
        self._wake = asyncio.Event()  # set when a receipt is ready or a window slot frees
        self._held: list[Receipt] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._unacked = 0  # receipts created and not yet acknowledged
        self._bound = asyncio.Event()  # set whenever a session binds
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._window = max(1, self.options.receipt_window)
        self._free = self._window  # window slots not in use
        self.port = 0
        self.http_port: int | None = None
        self._mo_ref = 0  # concatenation reference of the last long inbound message

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for SMPP clients; return the actual port."""
        self._server = await asyncio.start_server(self._serve, host, port)
        self._spawn(self._pump())
        self._spawn(self._expire())
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def start_http(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve the /_sim/* inspection endpoints; return the actual port."""
        app = web.Application()
        app.add_routes(
            [
                web.get("/_sim/messages", self._handle_messages),
                web.get("/_sim/stats", self._handle_stats),
                web.post("/_sim/release", self._handle_release),
                web.post("/_sim/reset", self._handle_reset),
                web.post("/_sim/disconnect", self._handle_disconnect),
                web.post("/_sim/inbound", self._handle_inbound),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.http_port = self._runner.addresses[0][1]
        return self.http_port

    async def close(self) -> None:
        """Stop serving, drop every connection and every receipt not yet delivered."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- controls --------------------------------------------------------------------------------

    @property
    def receipts_pending(self) -> int:
        """Receipts created and not yet acknowledged (held, delayed, queued or in flight)."""
        return self._unacked

    @property
    def bound_sessions(self) -> int:
        return sum(1 for s in self._sessions if s.bound)

    def release(self) -> int:
        """Send the held receipts now; returns how many."""
        held, self._held = self._held, []
        self._make_ready(held)
        return len(held)

    def reset(self) -> None:
        """Forget recorded messages and statistics. Ids keep increasing, so receipts under way
        cannot be confused with new messages."""
        self.messages.clear()
        self._partials.clear()
        self.stats = SmscStats()

    def drop_connections(self, role: str | None = None) -> int:
        """Close every client connection (bound as `role`, if given), as a network failure
        would; returns how many."""
        sessions = [s for s in self._sessions if role is None or s.role == role]
        for session in sessions:
            self._lose(session)
        return len(sessions)

    def _lose(self, session: Session) -> None:
        """Close a connection; its unanswered receipts go out again (on the next one)."""
        unanswered = session.lose()
        self.stats.receipts_unanswered += len(unanswered)
        self._free += len(unanswered)
        self._make_ready(unanswered)

    async def enquire_link_all(self, seconds: float = 2.0) -> list[int]:
        """Send enquire_link on every bound connection; the command_status of each answer."""
        sessions = [s for s in self._sessions if s.bound]
        answers = await asyncio.gather(*(s.request(EnquireLink(), seconds) for s in sessions))
        return [a.command_status for a in answers if isinstance(a, EnquireLinkResp)]

    async def deliver_mo(
        self,
        sender: str,
        recipient: str,
        text: str,
        seconds: float = 2.0,
        *,
        concat: str = "udh",
        order: list[int] | None = None,
    ) -> int:
        """Send a mobile-originated message from `sender` to the client's `recipient` address
        on a connection bound to receive: one deliver_sm (esm_class 0), or one per part of a
        long text (`smpp_mo`), all at once, in `order` if given (part indexes from
        0; leaving some out sends only those). The first error status among the client's
        answers, else ESME_ROK."""
        session = await self._bound_session()
        self._mo_ref = self._mo_ref % 0xFFFF + 1
        pdus = mo_pdus(sender, recipient, text, concat=concat, ref=self._mo_ref)
        if order is not None:
            pdus = [pdus[i] for i in order]
        answers = await asyncio.gather(*(session.request(pdu, seconds) for pdu in pdus))
        self.stats.mo_sent += len(pdus)
        return next((a.command_status for a in answers if a.command_status), ESME_ROK)

    # -- connections -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        session = Session(reader, writer)
        self._sessions.add(session)
        self.stats.connections += 1
        frames = FrameReader(reader)
        try:
            while not session.closed:
                batch = await frames.frames()
                session.out = []
                try:
                    going_on = all(self._handle(session, frame) for frame in batch)
                finally:
                    session.flush()
                await writer.drain()
                if not going_on:
                    break
        except (asyncio.IncompleteReadError, OSError, PduError):
            pass  # the client went away (or sent garbage we cannot resynchronise from)
        finally:
            self._lose(session)
            self._sessions.discard(session)
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def _handle(self, session: Session, frame: bytes) -> bool:
        """Act on one PDU from a client; False when the connection is to end."""
        _, command_id, status, sequence = HEADER.unpack_from(frame)
        if command_id & RESPONSE_BIT and sequence in session.receipts_out:
            # The answer to a deliver_sm (the receipt path: read from the header alone).
            receipt, _ = session.receipts_out.pop(sequence)
            self._settle(receipt, status == ESME_ROK and command_id != GENERIC_NACK)
            return True
        try:
            pdu = decode(frame)
        except PduError as exc:
            session.send(
                GenericNack(sequence_number=exc.sequence_number, command_status=exc.status)
            )
            return True
        if pdu.is_response:
            session.resolve(pdu)
        elif isinstance(pdu, Bind):
            return self._bind(session, pdu)
        elif isinstance(pdu, EnquireLink):
            self.stats.enquire_links += 1
            session.send(EnquireLinkResp(sequence_number=pdu.sequence_number))
        elif isinstance(pdu, Unbind):
            self.stats.unbinds += 1
            session.send(UnbindResp(sequence_number=pdu.sequence_number))
            return False
        elif isinstance(pdu, SubmitSm):
            self._submit(session, pdu)
        else:
            nack = GenericNack(sequence_number=pdu.sequence_number, command_status=ESME_RINVCMDID)
            session.send(nack)
        return True

    def _bind(self, session: Session, pdu: Bind) -> bool:
        """Bind as the PDU asks: a transmitter submits only, a receiver is sent deliver_sm only
        (SMPP 3.4 section 2.2); the same account may hold binds of each kind at once."""
        ok = hmac.compare_digest(
            pdu.system_id.encode(), self.options.system_id.encode()
        ) & hmac.compare_digest(pdu.password.encode(), self.options.password.encode())
        if session.bound:
            status = ESME_RALYBND
        elif ok:
            status = ESME_ROK
        else:
            status = ESME_RBINDFAIL
        answer = BIND_ANSWERS[type(pdu)](
            sequence_number=pdu.sequence_number,
            command_status=status,
            system_id=SMSC_SYSTEM_ID if status == ESME_ROK else "",
        )
        session.send(answer)
        if status == ESME_RBINDFAIL:
            self.stats.bind_failures += 1
            return False
        if status == ESME_ROK:
            role = ROLES[type(pdu)]
            self.stats.binds += 1
            self.stats.bind_roles[role] = self.stats.bind_roles.get(role, 0) + 1
            session.bound, session.role = True, role
            if role != "transmitter":
                self._bound.set()  # a connection receipts can go to
        return True

    # -- inspection over HTTP --------------------------------------------------------------------

    def stats_dict(self) -> dict[str, Any]:
        return dict(
            asdict(self.stats),
            receipts_pending=self.receipts_pending,
            receipts_held=len(self._held),
            bound_sessions=self.bound_sessions,
        )

    async def _handle_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages)

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats_dict())

    async def _handle_release(self, request: web.Request) -> web.Response:
        return web.json_response({"released": self.release()})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _handle_disconnect(self, request: web.Request) -> web.Response:
        return web.json_response({"disconnected": self.drop_connections()})

    async def _handle_inbound(self, request: web.Request) -> web.Response:
        """`{"from": "4520123456", "text": "STOP"[, "to": "POLITI", "concat": "sar"]}`: send
        it as a mobile-originated deliver_sm (`deliver_mo`); answers the client's status."""
        try:
            ask = await request.json()
            sender, text = str(ask["from"]).lstrip("+"), str(ask["text"])
            recipient, concat = str(ask.get("to", "POLITI")), str(ask.get("concat", "udh"))
            status = await self.deliver_mo(sender, recipient, text, concat=concat)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except (TimeoutError, ConnectionError):
            return web.json_response({"status": None, "error": "no answer"})
        return web.json_response({"status": status})


async def serve(
    options: SmscOptions,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    http_port: int | None = None,
    ready: Callable[[int, int | None], object] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or forever); `ready(port, http_port)` is called once bound."""
    simulator = SmscSimulator(options)
    try:
        actual_port = await simulator.start(host, port)
        actual_http = await simulator.start_http(host, http_port) if http_port is not None else None
        await notify_ready(ready, actual_port, actual_http)
        await (stop or asyncio.Event()).wait()
    finally:
        await simulator.close()


# -- command line --------------------------------------------------------------------------------


def _port(value: str) -> int:
    return port(value, invalid="not a port")


def _positive_int(value: str) -> int:
    try:
        result = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if result < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return result


def _id_format(value: str) -> str:
    try:
        value.format(1)
    except (ValueError, IndexError, KeyError):
        raise argparse.ArgumentTypeError(f"not a format for a number: {value!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = SmscOptions()
    parser = simulator_parser(
        "broadcaster simulate-gateway --protocol smpp",
        "Run an SMPP 3.4 SMSC simulator.",
        default_port=2775,
        port_type=_port,
        port_help="SMPP port, 0 = any free (default %(default)s)",
    )
    add = parser.add_argument
    # Accepted so the generic simulator command can pass its whole command line on.
    add("--protocol", choices=["smpp"], default="smpp", help=argparse.SUPPRESS)
    add("--http-port", type=_port, default=None, help="port of the /_sim/* HTTP endpoints")
    add("--system-id", default=defaults.system_id, help="expected system_id")
    add("--password", default=defaults.password, help="expected password")
    add_fault_options(parser, defaults, [("throttle", None), ("invalid", None)])
    add("--hold-receipts", action="store_true", help="keep receipts until POST /_sim/release")
    add(
        "--no-receipt-tlvs",
        dest="receipt_tlvs",
        action="store_false",
        help="receipts without receipted_message_id and message_state (the text names the id)",
    )
    add(
        "--submit-id-format",
        type=_id_format,
        default=defaults.submit_id_format,
        help="message ids in submit_sm_resp, a Python format of the number (default %(default)s)",
    )
    add(
        "--receipt-id-format",
        type=_id_format,
        default=defaults.receipt_id_format,
        help="message ids in receipt texts (default %(default)s)",
    )
    add("--first-message-id", type=int, default=defaults.first_message_id, help=argparse.SUPPRESS)
    add(
        "--receipt-window",
        type=_positive_int,
        default=defaults.receipt_window,
        help="deliver_sm awaiting their answer at most (default %(default)s)",
    )
    add("--seed", type=int, default=None, help="seed for reproducible outcomes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; serves until SIGTERM or SIGINT."""
    args = build_parser().parse_args(argv)
    options = options_from_args(SmscOptions, args)

    def announce(port: int, http_port: int | None) -> None:
        line = f"simulator listening on smpp://{args.host}:{port}"
        if http_port is not None:
            line += f" http://{args.host}:{http_port}"
        print(line, flush=True)

    return run_until_signalled(
        lambda stop: serve(
            options, args.host, args.port, http_port=args.http_port, ready=announce, stop=stop
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
