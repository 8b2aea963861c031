"""A circuit breaker per gateway: after repeated failed submissions traffic goes to the next
gateway; after a cool-down one probe batch is let through (half-open) and a success closes the
circuit again, so traffic moves back to the preferred gateway."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    open_seconds: float = 2.0
    _failures: int = 0
    _opened_at: float | None = None
    _probing: bool = False
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def _now(self) -> float:
        return self.clock()

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._now() - self._opened_at >= self.open_seconds:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a batch go to this gateway now? In half-open state only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def release_probe(self) -> None:
        """A probe slot was taken but no batch went out (nothing to claim)."""
        self._probing = False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self, *, trip: bool = False) -> None:
        """A submission failed for reasons of the gateway; `trip` opens at once (bad config)."""
        self._failures += 1
        self._probing = False
        if trip or self._failures >= self.failure_threshold or self._opened_at is not None:
            self._opened_at = self._now()
