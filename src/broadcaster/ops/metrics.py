"""Prometheus metrics. Labels are few and fixed: never a phone number, message or alert id.

Each process exports its own registry: the API (`broadcaster api`, one uvicorn process, no
workers) at `/metrics`, a standalone dispatcher on `BROADCASTER_METRICS_PORT`, `broadcaster
serve` both at `/metrics`. Scale by running more pods, one process each, and let Prometheus add
them up; gauges that describe the whole database (queue depth, oldest due delivery, live
dispatchers) are reported alike by every process and are read with `max`.

On the hot paths (a dispatcher's batches, receipts, inbound SMS) metrics move once per batch,
never once per message: counters by `inc(n)`, and histograms of per-message times (receipt
latency) are counted into buckets by the database and added per batch (`BatchHistogram`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

import asyncpg
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Seconds: from a fraction of a second (a small alert) to the hours an expiring alert may take.
ALERT_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# Seconds from submission to the gateway's final receipt: carriers take seconds to hours.
RECEIPT_SECONDS_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400)
API_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class BatchHistogram(Collector):
    """A histogram whose observations arrive already counted into its buckets, a batch at a
    time: `add(labels, counts, total)` with `counts[i]` the observations in bucket i (the last
    one above every bound) and `total` their sum. The receipt statement counts its receipts'
    latencies this way, in SQL, so that no Python runs per receipt."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(float(b) for b in buckets)
        self._series: dict[tuple[str, ...], tuple[list[float], list[float]]] = {}
        self._lock = threading.Lock()  # a dispatcher's metrics server reads from its own thread
        REGISTRY.register(self)

    def add(self, labels: Sequence[str], counts: Sequence[float], total: float) -> None:
        if len(counts) != len(self.buckets) + 1:
            raise ValueError(f"{self.name}: {len(counts)} counts for {len(self.buckets)} buckets")
        with self._lock:
            series = self._series.get(tuple(labels))
            if series is None:
                series = self._series[tuple(labels)] = ([0.0] * len(counts), [0.0])
            for i, n in enumerate(counts):
                series[0][i] += n
            series[1][0] += total

    def add_rows(self, rows: Iterable[Sequence[object]]) -> None:
        """Rows of (label values ..., bucket index, count, sum) as the database groups them;
        the bucket index is `width_bucket(value, bounds)`: 0 below the first bound, and
        len(bounds) above the last."""
        width = len(self.labelnames)
        grouped: dict[tuple[str, ...], tuple[list[float], list[float]]] = {}
        for row in rows:
            labels = tuple(str(v) for v in row[:width])
            bucket, n, total = row[width : width + 3]
            counts, sums = grouped.setdefault(labels, ([0.0] * (len(self.buckets) + 1), [0.0]))
            counts[int(bucket)] += float(n)  # type: ignore[call-overload, arg-type]
            sums[0] += float(total or 0)  # type: ignore[arg-type]
        for labels, (counts, sums) in grouped.items():
            self.add(labels, counts, sums[0])

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            series = {k: (list(c), s[0]) for k, (c, s) in self._series.items()}
        for labels, (counts, total) in sorted(series.items()):
            cumulative, running = [], 0.0
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
            family.add_metric(list(labels), cumulative, total)
        yield family


class PoolCollector(Collector):
    """Connections of this process's asyncpg pools in use, read when scraped."""

    def __init__(self) -> None:
        # The latest pool of each name (a process has one of each; tests make many in turn).
        self._pools: dict[str, asyncpg.Pool] = {}
        REGISTRY.register(self)

    def watch(self, name: str, pool: asyncpg.Pool) -> None:
        self._pools[name] = pool

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [self._families()[0], self._families()[1]]

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "broadcaster_db_pool_in_use",
                "Database connections of this process's pool in use",
                labels=["pool"],
            ),
            GaugeMetricFamily(
                "broadcaster_db_pool_size",
                "Database connections this process's pool may open",
                labels=["pool"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use, size = self._families()
        for name, pool in sorted(self._pools.items()):
            if pool.is_closing():
                continue
            in_use.add_metric([name], pool.get_size() - pool.get_idle_size())
            size.add_metric([name], pool.get_max_size())
        yield in_use
        yield size


# ---------------------------------------------------------------------------------- alerts

ALERTS_CREATED = Counter(
    "broadcaster_alerts_created_total",
    "Alerts accepted by the API, by priority and source (json: POST /v1/alerts; cap: CAP)",
    ["priority", "source"],
)
ALERTS_FANNED_OUT = Counter("broadcaster_alerts_fanned_out_total", "Alerts fanned out")
FANOUT_RECIPIENTS = Counter("broadcaster_fanout_recipients_total", "Deliveries created by fan-out")
FANOUT_SECONDS = Histogram(
    "broadcaster_fanout_seconds",
    "Time to materialise the deliveries of one alert",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
)
ALERT_FIRST_SUBMISSION_SECONDS = Histogram(
    "broadcaster_alert_first_submission_seconds",
    "From an alert's creation to its first SMS accepted by a gateway (observed when the alert "
    "completes)",
    ["priority"],
    buckets=ALERT_SECONDS_BUCKETS,
)
ALERT_LAST_SUBMISSION_SECONDS = Histogram(
    "broadcaster_alert_last_submission_seconds",
    "From an alert's creation to its last SMS accepted by a gateway (observed when the alert "
    "completes)",
    ["priority"],
    buckets=ALERT_SECONDS_BUCKETS,
)

# ------------------------------------------------------------------------------ deliveries

DELIVERIES = Counter(
    "broadcaster_deliveries_total",
    "Delivery outcomes: written by the dispatcher after a submission (sent, queued again, "
    "failed, expired, cancelled) and by receipts (delivered, failed, expired)",
    ["gateway", "status"],
)
RETRIES = Counter(
    "broadcaster_retries_total",
    "Deliveries put back in the queue after a submission, by reason (throttled, error)",
    ["gateway", "reason"],
)
FAILOVERS = Counter(
    "broadcaster_failovers_total",
    "Deliveries a gateway did not take that go again at once because another gateway is usable",
    ["gateway"],
)
IN_FLIGHT = Gauge(
    "broadcaster_deliveries_in_flight",
    "Deliveries this dispatcher has claimed and not written back yet",
)
QUEUE_DEPTH = Gauge(
    "broadcaster_queue_depth",
    "Deliveries waiting to be submitted (queued or in flight), by priority",
    ["priority"],
)
QUEUE_OLDEST_DUE = Gauge(
    "broadcaster_queue_oldest_due_seconds",
    "How long the most overdue delivery has been due (0 when none is)",
)

# -------------------------------------------------------------------------------- gateways

GATEWAY_REQUESTS = Counter(
    "broadcaster_gateway_requests_total",
    "Gateway submissions (batches) by outcome: ok, throttled, transient_error, rejected, "
    "misconfigured",
    ["gateway", "outcome"],
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "broadcaster_gateway_request_seconds",
    "Duration of one gateway submission (a batch)",
    ["gateway", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GATEWAY_BATCH_SIZE = Histogram(
    "broadcaster_gateway_batch_size",
    "Messages in one gateway submission",
    ["gateway"],
    buckets=BATCH_SIZE_BUCKETS,
)
GATEWAY_ERRORS = Counter(
    "broadcaster_gateway_errors_total", "Failed gateway submissions by kind", ["gateway", "kind"]
)
CIRCUIT_OPEN = Gauge(
    "broadcaster_gateway_circuit_open",
    "1 while a gateway's circuit is open or half-open",
    ["gateway"],
)
RATE_TOKENS = Counter(
    "broadcaster_rate_tokens_total",
    "Rate-limit tokens this dispatcher took from a gateway's shared bucket (its share of the "
    "account's limit is its rate over the sum of all dispatchers')",
    ["gateway"],
)
GATEWAY_SPEED = Gauge(
    "broadcaster_gateway_speed",
    "Fraction of a gateway's configured rate this dispatcher refills at (below 1 for a while "
    "after the gateway throttled)",
    ["gateway"],
)
DISPATCHERS_LIVE = Gauge(
    "broadcaster_dispatchers_live", "Dispatchers sharing the gateways' rate limits"
)

# -------------------------------------------------------------------- receipts and inbound

RECEIPTS = Counter(
    "broadcaster_receipts_total", "Delivery receipts received and committed", ["gateway", "state"]
)
RECEIPT_SECONDS = BatchHistogram(
    "broadcaster_receipt_seconds",
    "From a delivery's submission to the receipt that made it final",
    ["gateway"],
    RECEIPT_SECONDS_BUCKETS,
)
RECEIPT_FLUSHES = Counter(
    "broadcaster_receipt_flushes_total",
    "Group commits of receipts and of inbound SMS (writer), by outcome (ok; unavailable: "
    "answered 503, the gateway sends them again; refused: values the database cannot store)",
    ["writer", "outcome"],
)
RECEIPTS_UNKNOWN_STATUS = Counter(
    "broadcaster_receipts_unknown_status_total",
    "Receipts whose provider status word the gateway's mapping does not know (kept, applied to "
    "nothing)",
    ["gateway"],
)
CALLBACKS_REJECTED = Counter(
    "broadcaster_callbacks_rejected_total", "Callback requests refused", ["gateway", "reason"]
)
INBOUND = Counter(
    "broadcaster_inbound_messages_total",
    "Inbound SMS stored (repeats of a stored message not counted), by what they were",
    ["kind"],
)
WEBHOOK_POSTS = Counter(
    "broadcaster_webhook_posts_total",
    "Attempts to post a webhook (kind: tip to its alert's tip_webhook, outcome to its "
    "status_webhook), by outcome",
    ["kind", "outcome"],
)

# ------------------------------------------------------------------------------------- API

API_REQUESTS = Counter(
    "broadcaster_api_requests_total",
    "API requests by route template, method and status code (gateway callbacks and inbound SMS "
    "are counted by broadcaster_receipts_total, broadcaster_receipt_flushes_total and "
    "broadcaster_callbacks_rejected_total)",
    ["route", "method", "status"],
)
API_REQUEST_SECONDS = Histogram(
    "broadcaster_api_request_seconds",
    "API request duration by route template",
    ["route"],
    buckets=API_SECONDS_BUCKETS,
)

POOLS = PoolCollector()
