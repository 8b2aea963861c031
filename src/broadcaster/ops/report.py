"""`broadcaster report`: a self-contained HTML evaluation of the programme over a period.

For the people who run it: headline numbers, then one chart per question (alerts per week,
recipients and delivery ratio per alert, time to deliver, tips per alert, active subscribers over
time and per zone, sign-up reasons) and a table of the period's alerts. Charts are inline SVG
(`ops/charts.py`); the page loads nothing and runs no script. Everything is an aggregate: no
phone number, no message text; an alert is shown by its id, creation time, priority, status and
the names of the zones it targeted.

What the numbers mean (the period, SMS sent, time to deliver, active subscribers ...) is said
at the end of the page (`report.html`, a string.Template) and in the README.

One query per chart, each a single statement over the period (the per-alert query feeds the two
per-alert charts and the table).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from broadcaster.citizens.stats import SUBSCRIBERS_BY_ZONE
from broadcaster.database import connect
from broadcaster.ingest.alerts import PRIORITY_NAMES
from broadcaster.migrate import ensure_migrated
from broadcaster.ops import charts

TIMEZONE = "Europe/Copenhagen"
TZ = ZoneInfo(TIMEZONE)
MAX_ZONES = 25
NO_ALERTS = "no alerts in this period"
# Upper bounds (seconds) of the time-to-deliver buckets; the last bucket is open.
DELIVERY_BOUNDS = (10, 30, 60, 120, 300, 600, 1800, 3600)

PERIOD_ALERTS = "kind = 'alert' AND created_at >= $1 AND created_at < $2"

# Each subscriber's active span, rebuilt from its dates (see the module docstring).
SPANS = """
SELECT CASE WHEN status = 'pending' THEN NULL ELSE coalesce(confirmed_at, created_at) END
           AS started,
       CASE status WHEN 'active' THEN NULL
                   WHEN 'opted_out' THEN coalesce(opted_out_at, created_at)
                   WHEN 'erased' THEN coalesce(least(opted_out_at, erased_at), created_at)
       END AS stopped
FROM subscribers
"""

HEADLINE = f"""
WITH a AS (SELECT id, created_at FROM alerts WHERE {PERIOD_ALERTS}),
d AS (
    SELECT count(*) FILTER (WHERE d.sent_at IS NOT NULL) AS sent,
           count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM d.final_at - a.created_at))
               FILTER (WHERE d.status = 'delivered' AND d.final_at IS NOT NULL) AS median_seconds
    FROM a JOIN deliveries d ON d.alert_id = a.id
),
spans AS ({SPANS})
SELECT (SELECT count(*) FROM a) AS alerts, d.sent, d.delivered, d.median_seconds,
       (SELECT count(*) FROM inbound_messages
        WHERE kind = 'tip' AND received_at >= $1 AND received_at < $2) AS tips,
       (SELECT count(*) FROM subscribers
        WHERE opted_out_at >= $1 AND opted_out_at < $2) AS opt_outs,
       (SELECT count(*) FROM signups
        WHERE confirmed_at >= $1 AND confirmed_at < $2) AS signups,
       (SELECT count(*) FROM spans
        WHERE started < $2 AND (stopped IS NULL OR stopped >= $2)) AS active
FROM d
"""

ALERTS_PER_WEEK = f"""
WITH per AS (
    SELECT date_trunc('week', created_at AT TIME ZONE '{TIMEZONE}')::date AS week,
           count(*) AS alerts
    FROM alerts WHERE {PERIOD_ALERTS}
    GROUP BY 1
)
SELECT w.week::date AS week, coalesce(per.alerts, 0) AS alerts
FROM generate_series(date_trunc('week', $1 AT TIME ZONE '{TIMEZONE}'),
                     date_trunc('week', ($2 - interval '1 microsecond') AT TIME ZONE '{TIMEZONE}'),
                     interval '1 week') AS w(week)
LEFT JOIN per ON per.week = w.week::date
ORDER BY 1
"""

PER_ALERT = """
SELECT a.id, a.created_at, a.priority, a.status, coalesce(a.recipients, 0) AS recipients,
       d.sent, d.delivered, d.failed, t.tips, coalesce(z.zones, '') AS zones
FROM alerts a
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM deliveries WHERE alert_id = a.id) d
CROSS JOIN LATERAL (
    SELECT count(*) AS tips FROM inbound_messages WHERE kind = 'tip' AND alert_id = a.id) t
CROSS JOIN LATERAL (
    SELECT string_agg(zn.name, ', ' ORDER BY zn.name) AS zones
    FROM alert_targets at JOIN zones zn ON zn.id = at.zone_id
    WHERE at.alert_id = a.id) z
WHERE a.kind = 'alert' AND a.created_at >= $1 AND a.created_at < $2
ORDER BY a.created_at, a.id
"""

TIME_TO_DELIVER = """
SELECT width_bucket(extract(epoch FROM d.final_at - a.created_at)::float8, $3::float8[])
           AS bucket,
       count(*) AS delivered
FROM alerts a JOIN deliveries d ON d.alert_id = a.id
WHERE a.kind = 'alert' AND a.created_at >= $1 AND a.created_at < $2
  AND d.status = 'delivered' AND d.final_at IS NOT NULL
GROUP BY 1
"""

ACTIVE_OVER_TIME = f"""
WITH spans AS ({SPANS}),
events AS (
    SELECT started AS at, 1 AS delta FROM spans WHERE started IS NOT NULL
    UNION ALL
    SELECT stopped, -1 FROM spans WHERE started IS NOT NULL AND stopped IS NOT NULL
),
points AS (
    SELECT t FROM generate_series($1::timestamptz, $2::timestamptz, interval '7 days') AS t
    UNION SELECT $2::timestamptz
),
moves AS (
    -- each event counts from the first point at or after it
    SELECT least($2::timestamptz,
                 $1::timestamptz + interval '7 days'
                     * greatest(0, ceil(extract(epoch FROM at - $1::timestamptz) / 604800)))
               AS t,
           sum(delta) AS delta
    FROM events WHERE at < $2
    GROUP BY 1
)
SELECT p.t, (sum(coalesce(m.delta, 0)) OVER (ORDER BY p.t))::bigint AS active
FROM points p LEFT JOIN moves m ON m.t = p.t
ORDER BY p.t
"""

SIGNUP_REASONS = """
SELECT coalesce(reason, 'not_given') AS reason, count(*) AS confirmed
FROM signups
WHERE confirmed_at >= $1 AND confirmed_at < $2
GROUP BY 1 ORDER BY 2 DESC, 1
"""


class ReportError(ValueError):
    """Bad options or an output that cannot be written: one line for the user."""


def parse_moment(text: str, *, end_of_day: bool = False) -> datetime:
    """A date (midnight in Copenhagen; with `end_of_day` the next midnight, so that
    `--until 2026-03-31` includes that day) or an ISO 8601 time (Copenhagen unless it says)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end_of_day:
                day += timedelta(days=1)
            return datetime.combine(day, time(), TZ)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"not a date or time: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=TZ)


def period(since: str, until: str | None) -> tuple[datetime, datetime]:
    """The period [since, until) from the command's options; until defaults to now."""
    start = parse_moment(since)
    end = parse_moment(until, end_of_day=True) if until else datetime.now(UTC)
    if start >= end:
        raise ReportError(
            f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})"
        )
    return start, end


def check_output(out: Path) -> None:
    """Fail before querying when the report could not be written."""
    if out.is_dir():
        raise ReportError(f"cannot write {out}: it is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ReportError(f"cannot write {out}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ReportError(f"cannot write {out}: permission denied")


@dataclass(frozen=True)
class Headline:
    alerts: int
    sent: int
    delivered: int
    median_seconds: float | None
    tips: int
    opt_outs: int
    signups: int
    active: int

    @property
    def delivered_ratio(self) -> float | None:
        return self.delivered / self.sent if self.sent else None


@dataclass
class Data:
    since: datetime
    until: datetime
    generated_at: datetime
    headline: Headline
    weeks: list[tuple[date, int]]
    alerts: list[dict[str, Any]]
    delivery_buckets: list[int]
    active: list[tuple[datetime, int]]
    zones: list[tuple[str, int]]
    reasons: list[tuple[str, int]]


async def collect(conn: asyncpg.Connection, since: datetime, until: datetime) -> Data:
    """Run the report's queries (read only, one per chart) in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow(HEADLINE, since, until)
        weeks = [(r["week"], r["alerts"]) for r in await conn.fetch(ALERTS_PER_WEEK, since, until)]
        alerts = [dict(r) for r in await conn.fetch(PER_ALERT, since, until)]
        buckets = [0] * (len(DELIVERY_BOUNDS) + 1)
        for r in await conn.fetch(TIME_TO_DELIVER, since, until, list(DELIVERY_BOUNDS)):
            buckets[r["bucket"]] += r["delivered"]
        active = [(r["t"], r["active"]) for r in await conn.fetch(ACTIVE_OVER_TIME, since, until)]
        zones = [
            (_zone_label(r), r["active"])
            for r in await conn.fetch(SUBSCRIBERS_BY_ZONE, None)
            if r["active"]
        ]
        reasons = [
            (r["reason"].replace("_", " "), r["confirmed"])
            for r in await conn.fetch(SIGNUP_REASONS, since, until)
        ]
        generated_at = await conn.fetchval("SELECT now()")
    zones.sort(key=lambda z: (-z[1], z[0]))
    return Data(
        since=since,
        until=until,
        generated_at=generated_at,
        headline=Headline(**{k: head[k] for k in Headline.__dataclass_fields__}),
        weeks=weeks,
        alerts=alerts,
        delivery_buckets=buckets,
        active=active,
        zones=zones[:MAX_ZONES],
        reasons=reasons,
    )


def _zone_label(row: asyncpg.Record) -> str:
    if row["kind"] == "postal_code":
        # The shipped postal codes are named "2900 Hellerup" already.
        name, code = row["name"], row["code"]
        return name if name.startswith(code) else f"{code} {name}"
    return f"{row['name']} ({row['kind'].replace('_', ' ')})"


def _local(moment: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return moment.astimezone(TZ).strftime(fmt)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def _bound(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min" if seconds < 3600 else f"{seconds // 3600} h"


def delivery_labels() -> list[str]:
    b = DELIVERY_BOUNDS
    return [
        f"< {_bound(b[0])}",
        *(f"{_bound(lo)} - {_bound(hi)}" for lo, hi in itertools.pairwise(b)),
        f"≥ {_bound(b[-1])}",
    ]


def build_charts(data: Data) -> list[tuple[str, str]]:
    """(caption, svg) for each chart, in the page's order."""
    ids = [f"#{a['id']}" for a in data.alerts]
    ratio = [a["delivered"] / a["sent"] if a["sent"] else 0.0 for a in data.alerts]
    return [
        (
            "Alerts created per week (weeks start on Monday, Copenhagen time).",
            charts.bar_chart(
                "Alerts per week",
                [w.strftime("%d %b %Y") for w, _ in data.weeks],
                [charts.Series("alerts", [n for _, n in data.weeks])],
                x_label="week starting",
                y_label="alerts",
                empty=NO_ALERTS,
            ),
        ),
        (
            "Bars: recipients of each alert (light) and those delivered (dark). "
            "Top band: delivered ÷ SMS sent.",
            charts.bar_chart(
                "Recipients and delivery ratio per alert",
                ids,
                [
                    charts.Series(
                        "recipients", [a["recipients"] for a in data.alerts], charts.LIGHT
                    ),
                    charts.Series("delivered", [a["delivered"] for a in data.alerts]),
                ],
                x_label="alert (id)",
                y_label="SMS recipients",
                line=charts.Series("delivered ratio", ratio, charts.ORANGE),
                line_label="delivered ratio",
                empty=NO_ALERTS if not data.alerts else "no recipients for these alerts",
            ),
        ),
        (
            "Delivered SMS by the time from the alert's creation to the delivered receipt.",
            charts.bar_chart(
                "Time to deliver",
                delivery_labels() if data.alerts else [],
                [charts.Series("delivered SMS", data.delivery_buckets)],
                x_label="alert created → delivered receipt",
                y_label="delivered SMS",
                empty=NO_ALERTS if not data.alerts else "no SMS delivered in this period",
            ),
        ),
        (
            "Tips (citizens' replies) attributed to each alert.",
            charts.bar_chart(
                "Tips per alert",
                ids,
                [charts.Series("tips", [a["tips"] for a in data.alerts])],
                x_label="alert (id)",
                y_label="tips",
                empty=NO_ALERTS if not data.alerts else "no tips for these alerts",
            ),
        ),
        (
            "Active subscribers at the start of each week of the period and at its end.",
            charts.line_chart(
                "Active subscribers over time",
                [_local(t, "%d %b %Y") for t, _ in data.active],
                [n for _, n in data.active],
                positions=[t.timestamp() for t, _ in data.active],
                x_label="date",
                y_label="active subscribers",
            ),
        ),
        (
            f"Active subscribers now, per zone (the {MAX_ZONES} largest; a subscriber counts "
            "once in each zone one of their places lies in).",
            charts.hbar_chart(
                "Active subscribers per zone",
                [z for z, _ in data.zones],
                [n for _, n in data.zones],
                x_label="active subscribers",
                empty="no active subscribers in a named zone",
            ),
        ),
        (
            "Reasons given at the sign-ups confirmed in the period.",
            charts.hbar_chart(
                "Sign-up reasons",
                [r for r, _ in data.reasons],
                [n for _, n in data.reasons],
                x_label="confirmed sign-ups",
                empty="no sign-ups in this period",
                color=charts.ORANGE,
            ),
        ),
    ]


def render(data: Data) -> str:
    """The report as one HTML document (the page is `report.html` beside this module)."""
    h = data.headline
    ratio = h.delivered_ratio
    headline_rows = [
        ("Alerts", f"{h.alerts:,}"),
        ("SMS sent", f"{h.sent:,}"),
        ("Delivered", f"{h.delivered:,}"),
        ("Delivered ratio", "-" if ratio is None else f"{ratio:.1%}"),
        ("Median time to deliver", duration(h.median_seconds)),
        ("Tips received", f"{h.tips:,}"),
        ("Opt-outs", f"{h.opt_outs:,}"),
        ("Confirmed sign-ups", f"{h.signups:,}"),
        ("Active subscribers at the end", f"{h.active:,}"),
    ]
    headline = []
    if not data.alerts:
        headline.append(f"<p class='empty' id='no-alerts'>{NO_ALERTS.capitalize()}.</p>")
    headline.append("<table class='headline' id='headline'>")
    for name, value in headline_rows:
        key = name.lower().replace(" ", "-")
        headline.append(f"<tr id='h-{key}'><td>{name}</td><td>{escape(value)}</td></tr>")
    headline.append("</table>")
    page = Template(resources.files("broadcaster.ops").joinpath("report.html").read_text("utf-8"))
    return page.substitute(
        title_period=f"{_local(data.since, '%Y-%m-%d')} to {_local(data.until, '%Y-%m-%d')}",
        period=f"From {_local(data.since)} to {_local(data.until)} ({TIMEZONE}); "
        f"generated {_local(data.generated_at)}.",
        headline="\n".join(headline),
        charts="\n".join(
            f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"
            for caption, svg in build_charts(data)
        ),
        alerts=_alerts_table(data.alerts),
    )


# The alerts table's columns and their CSS classes (text columns are left-aligned).
ALERT_COLUMNS = (
    ("id", ""),
    ("created", "text"),
    ("priority", "text"),
    ("status", "text"),
    ("zones", "text zones"),
    ("recipients", ""),
    ("sent", ""),
    ("delivered", ""),
    ("delivered ratio", ""),
    ("failed", ""),
    ("tips", ""),
)


def _alerts_table(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return f"<p class='empty'>{NO_ALERTS.capitalize()}.</p>"
    head = "".join(f"<th class='{css}'>{name}</th>" for name, css in ALERT_COLUMNS)
    rows = [f"<table id='alerts'><tr>{head}</tr>"]
    for a in alerts:
        cells = (
            str(a["id"]),
            _local(a["created_at"]),
            PRIORITY_NAMES.get(a["priority"], str(a["priority"])),
            a["status"],
            a["zones"] or "drawn area",
            f"{a['recipients']:,}",
            f"{a['sent']:,}",
            f"{a['delivered']:,}",
            f"{a['delivered'] / a['sent']:.1%}" if a["sent"] else "-",
            f"{a['failed']:,}",
            f"{a['tips']:,}",
        )
        tds = "".join(
            f"<td class='{css}'>{escape(c)}</td>"
            for (_, css), c in zip(ALERT_COLUMNS, cells, strict=True)
        )
        rows.append(f"<tr>{tds}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


async def run(url: str, since: datetime, until: datetime, out: Path) -> int:
    """Write the report for [since, until) to `out`."""
    conn = await connect(url, server_settings={"application_name": "broadcaster report"})
    try:
        await ensure_migrated(conn)
        data = await collect(conn, since, until)
    finally:
        await conn.close()
    html = render(data)
    try:
        await asyncio.to_thread(out.write_text, html, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {out}: {exc.strerror}") from None
    return 0
