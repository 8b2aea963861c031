"""How a dispatcher's loops learn that there is work: a NOTIFY on the wake-up channel (sent
when an alert is created and when one is fanned out), a wake-up of our own (after a fan-out
here), or, failing both, the poll interval (procrastinate's `_run_loop` waits the same way:
whichever comes first of notification, poll timeout and stop).

Wake-ups are counted: a loop reads the count before it looks at the queue and sleeps only if
none came since, so no loop can swallow another's (as clearing one shared event could).

The LISTEN connection is opened again whenever it is lost (a restart of the database ends it),
with the backoff and the once-only reports of the other loops (outage.py). Until it is back the
loops fall back to the poll; once it is, every loop looks at the queue at once, for the
notifications sent while nobody listened. Without this a dispatcher outlived a restart but
stopped hearing wake-ups for good: a new alert waited for the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from broadcaster.database import CONNECT_ERRORS
from broadcaster.dispatch.outage import OutageWatch
from broadcaster.ingest.alerts import WAKEUP_CHANNEL

CONNECT_TIMEOUT_SECONDS = 10.0


class Wakeups:
    def __init__(
        self,
        database_url: str,
        poll_interval: float,
        outage: OutageWatch,
        application_name: str = "dispatcher wake-ups",
    ) -> None:
        self.database_url = database_url
        self.poll_interval = poll_interval
        self.count = 0
        self._db = outage
        self._application_name = application_name[:63]
        self._woken = asyncio.Event()
        self._listener: Any = None
        self._lost = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def listen(self) -> None:
        """Open the LISTEN connection; if that fails, `keep_listening` tries again."""
        mark = self._db.attempt()
        try:
            self._listener = await self._open()
        except CONNECT_ERRORS as exc:
            self._db.failed(exc, "listening for wake-ups")
            self._lost.set()
        else:
            self._db.ok(mark)

    async def keep_listening(self, stop: asyncio.Event) -> None:
        """Open the LISTEN connection again whenever it is lost, until `stop`."""
        while not stop.is_set():
            # The connection says when it ends; the timeout is a second look at it anyway.
            await _first(stop, self._lost, seconds=self.poll_interval)
            if stop.is_set():
                return
            if self.listening:
                continue
            self._lost.clear()
            mark = self._db.attempt()
            try:
                self._listener = await self._open()
            except CONNECT_ERRORS as exc:
                pause = self._db.failed(exc, "listening for wake-ups")
                self._lost.set()
                await _first(stop, seconds=pause)
                continue
            self._db.ok(mark)
            self.wake_all()  # whatever was notified while nobody listened

    async def _open(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self.database_url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": self._application_name},
        )
        try:
            conn.add_termination_listener(self._on_lost)
            await conn.add_listener(WAKEUP_CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _on_lost(self, conn: object) -> None:
        if conn is self._listener:
            self._lost.set()

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()

    def _on_notify(self, *_: object) -> None:
        self.wake_all()

    def wake_all(self) -> None:
        self.count += 1
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    async def idle(self, stop: asyncio.Event, seen: int, seconds: float | None = None) -> None:
        """Sleep until a wake-up, the poll interval (or `seconds`, if sooner: something is
        due then), or stop, whichever comes first; at once if a wake-up came after `seen` (the
        count when the caller looked)."""
        if stop.is_set() or self.count != seen:
            return
        wait = self.poll_interval if seconds is None else max(0.0, min(seconds, self.poll_interval))
        await _first(stop, self._woken, seconds=wait)


async def _first(*events: asyncio.Event, seconds: float) -> None:
    """Wait until one of `events` is set, or for `seconds`."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
