"""How a dispatcher's loops learn that there is work: a NOTIFY on the wake-up channel (sent
when an alert is created and when one is fanned out), a wake-up of our own (after a fan-out
here), or, failing both, the poll interval (procrastinate's `_run_loop` waits the same way:
whichever comes first of notification, poll timeout and stop).

Wake-ups are counted: a loop reads the count before it looks at the queue and sleeps only if
none came since, so no loop can swallow another's (as clearing one shared event could).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from broadcaster.ingest.alerts import WAKEUP_CHANNEL


class Wakeups:
    def __init__(self, database_url: str, poll_interval: float) -> None:
        self.database_url = database_url
        self.poll_interval = poll_interval
        self.count = 0
        self._woken = asyncio.Event()
        self._listener: Any = None

    async def listen(self) -> None:
        """Open the LISTEN connection."""
        from broadcaster.database import connect

        self._listener = await connect(self.database_url)
        await self._listener.add_listener(WAKEUP_CHANNEL, self._on_notify)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    def _on_notify(self, *_: object) -> None:
        self.wake_all()

    def wake_all(self) -> None:
        self.count += 1
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    async def idle(self, stop: asyncio.Event, seen: int) -> None:
        """Sleep until a wake-up, the poll interval, or stop, whichever comes first; at once if
        a wake-up came after `seen` (the count when the caller looked)."""
        if stop.is_set() or self.count != seen:
            return
        waiters = [asyncio.ensure_future(self._woken.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()
