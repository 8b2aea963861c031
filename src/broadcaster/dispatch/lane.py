"""The Lane: one gateway as a dispatcher sees it, and how it slows down after throttling."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from broadcaster.dispatch.circuit import CircuitBreaker
from broadcaster.dispatch.ratelimit import SharedBucket
from gateway_adapters.base import GatewayAdapter

# After throttling a gateway's rate is halved (down to MIN_SPEED of the share) and regains
# SPEED_STEP of the share per successful batch.
MIN_SPEED = 0.05
SPEED_STEP = 0.05


@dataclass
class Lane:
    """One gateway as this dispatcher sees it: its adapter, the account's shared rate-limit
    bucket, its circuit breaker, and how long it asked us to hold off (throttling)."""

    adapter: GatewayAdapter
    bucket: SharedBucket
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    paused_until: float = 0.0
    # Fraction of the limit this dispatcher refills the bucket at: halved on each throttling
    # answer, regained step by step on successful batches (additive increase, multiplicative
    # decrease), so a gateway that throttles is not hit at full speed again the moment
    # Retry-After runs out.
    speed: float = 1.0

    @property
    def name(self) -> str:
        return self.adapter.config.name

    def slow_down(self) -> None:
        self.speed = max(MIN_SPEED, self.speed / 2)
        self.bucket.set_speed(self.speed)

    def speed_up(self) -> None:
        if self.speed < 1.0:
            self.speed = min(1.0, self.speed + SPEED_STEP)
            self.bucket.set_speed(self.speed)

    def usable(self) -> bool:
        return time.monotonic() >= self.paused_until and self.breaker.state == "closed"
