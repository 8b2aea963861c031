"""The circuit breaker's states on a fake clock."""

from __future__ import annotations

from broadcaster.dispatch.circuit import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_probes_once_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=2.0, clock=clock)
    for _ in range(2):
        breaker.record_failure()
        assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 2.0
    assert breaker.state == "half-open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_failure()  # probe failed: open again for another period
    assert breaker.state == "open"
    clock.now = 4.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_trip_opens_at_once_and_unused_probe_is_released() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=5, open_seconds=1.0, clock=clock)
    breaker.record_failure(trip=True)
    assert breaker.state == "open"
    clock.now = 1.0
    assert breaker.allow()
    breaker.release_probe()
    assert breaker.allow()


def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=1.0, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"
