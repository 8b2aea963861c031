"""Prometheus metrics. Labels are few and fixed: never a phone number, message or alert id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ALERTS_CREATED = Counter(
    "broadcaster_alerts_created_total", "Alerts accepted by the API", ["priority"]
)
ALERTS_FANNED_OUT = Counter("broadcaster_alerts_fanned_out_total", "Alerts fanned out")
FANOUT_RECIPIENTS = Counter("broadcaster_fanout_recipients_total", "Deliveries created by fan-out")
FANOUT_SECONDS = Histogram(
    "broadcaster_fanout_seconds",
    "Time to materialise the deliveries of one alert",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
)
DELIVERIES = Counter(
    "broadcaster_deliveries_total",
    "Delivery outcomes written by the dispatcher and by receipts",
    ["gateway", "status"],
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "broadcaster_gateway_request_seconds",
    "Duration of one gateway submission (a batch)",
    ["gateway", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GATEWAY_ERRORS = Counter(
    "broadcaster_gateway_errors_total", "Failed gateway submissions by kind", ["gateway", "kind"]
)
RECEIPTS = Counter(
    "broadcaster_receipts_total", "Delivery receipts received and committed", ["gateway", "state"]
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
QUEUE_DEPTH = Gauge(
    "broadcaster_queue_depth", "Deliveries waiting to be submitted (queued or in flight)"
)
DISPATCHERS_LIVE = Gauge(
    "broadcaster_dispatchers_live", "Dispatchers sharing the gateways' rate limits"
)
CIRCUIT_OPEN = Gauge(
    "broadcaster_gateway_circuit_open",
    "1 while a gateway's circuit is open or half-open",
    ["gateway"],
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
