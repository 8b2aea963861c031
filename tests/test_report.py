"""`broadcaster report`: rendered by the real command from a seeded database.

The seed spans December 2025 to March 2026 (alerts, a notice, deliveries with receipts, tips,
opt-outs, sign-ups with reasons, an erased subscriber); the report covers January and February
2026. Expected numbers are computed here from the seed lists, not with the report's queries.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import asyncpg

from broadcaster.ops import charts

UNTIL = datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # --until 2026-02-28: midnight after it, CET
SINCE = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)  # --since 2026-01-01
ALERT_TEXT = "Burglary suspect seen near the station"
TIP_TEXT = "I saw a red car on Strandvejen"


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def phone(n: int) -> str:
    return f"+452000{n:04d}"


# id: (status, confirmed_at, opted_out_at, erased_at)
SUBSCRIBERS = {
    1: ("active", "2025-12-10T12:00", None, None),
    2: ("active", "2026-01-03T12:00", None, None),
    3: ("active", "2026-01-12T12:00", None, None),
    4: ("active", "2026-01-20T12:00", None, None),
    5: ("opted_out", "2026-01-04T12:00", "2026-01-25T12:00", None),
    6: ("opted_out", "2025-12-01T12:00", "2026-02-10T12:00", None),
    7: ("pending", None, None, None),
    8: ("active", "2026-02-15T12:00", None, None),
    9: ("active", "2026-03-05T12:00", None, None),
    10: ("erased", "2026-01-02T12:00", None, "2026-02-05T12:00"),
}
# subscriber: (reason, confirmed_at)
SIGNUPS = [
    (1, "help_police", "2025-12-10T12:00"),
    (2, "help_police", "2026-01-03T12:00"),
    (3, "help_police", "2026-01-12T12:00"),
    (4, "feel_safer", "2026-01-20T12:00"),
    (5, "curious", "2026-01-04T12:00"),
    (7, "feel_safer", None),
    (8, None, "2026-02-15T12:00"),
    (9, "stay_informed", "2026-03-05T12:00"),
]
# id: (kind, created_at, priority)
ALERTS = {
    1: ("alert", "2026-01-05T10:00", 0),
    2: ("alert", "2026-01-14T09:00", 1),
    3: ("alert", "2026-02-02T15:00", 2),
    4: ("alert", "2025-12-15T10:00", 2),
    5: ("notice", "2026-01-10T10:00", 2),
    6: ("alert", "2026-03-03T10:00", 2),
}
# (alert, subscriber, status, seconds to submission or None, seconds to final or None)
DELIVERIES = [
    (1, 1, "delivered", 5, 20),
    (1, 2, "delivered", 6, 45),
    (1, 5, "failed", 6, 30),
    (1, 6, "delivered", 7, 400),
    (2, 1, "delivered", 3, 90),
    (2, 2, "delivered", 3, 1000),
    (2, 3, "sent", 4, None),
    (2, 4, "expired", None, 3600),
    (3, 1, "delivered", 2, 15),
    (3, 3, "delivered", 2, 5000),
    (3, 4, "delivered", 2, 120),
    (3, 2, "failed", None, 1),
    (4, 1, "delivered", 2, 10),
    (4, 6, "delivered", 2, 12),
    (5, 2, "delivered", 1, 4),
    (6, 1, "delivered", 1, 4),
]
# (kind, alert, subscriber, received_at)
INBOUND = [
    ("tip", 1, 1, "2026-01-05T11:00"),
    ("tip", 1, 2, "2026-01-06T08:00"),
    ("tip", 3, 3, "2026-02-02T16:00"),
    ("tip", None, 4, "2026-02-20T10:00"),
    ("tip", 4, 1, "2025-12-16T10:00"),
    ("stop", None, 5, "2026-01-25T12:00"),
]


async def seed(conn: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    """Write the seed; return the two postal-code zones used, as {key: (code, name)}."""
    zones = await conn.fetch(
        "SELECT id, code, name FROM zones WHERE kind = 'postal_code' ORDER BY code LIMIT 2"
    )
    assert len(zones) == 2, "the shipped postal codes are loaded by the migrations"
    z1, z2 = zones
    for sid, (status, confirmed, opted_out, erased) in SUBSCRIBERS.items():
        created = t(confirmed) - timedelta(minutes=5) if confirmed else t("2026-02-01T12:00")
        await conn.execute(
            "INSERT INTO subscribers (id, phone, status, created_at, confirmed_at, opted_out_at,"
            " erased_at, erased_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            sid,
            None if status == "erased" else phone(sid),
            status,
            created,
            t(confirmed) if confirmed else None,
            t(opted_out) if opted_out else None,
            t(erased) if erased else None,
            b"x" * 32 if erased else None,
        )
    await conn.execute("SELECT setval('subscribers_id_seq', 100)")
    for sid, zone in ((1, z1), (2, z1), (3, z2), (5, z2)):
        await conn.execute(
            "INSERT INTO subscriber_zones (subscriber_id, zone_id) VALUES ($1, $2)",
            sid,
            zone["id"],
        )
    for sid, reason, confirmed in SIGNUPS:
        created = t(confirmed) if confirmed else t("2026-02-01T12:00")
        await conn.execute(
            "INSERT INTO signups (subscriber_id, locations, language, reason, source, code_hash,"
            " created_at, expires_at, confirmed_at)"
            " VALUES ($1, '[]', 'da', $2, 'web', '\\x00', $3, $4, $5)",
            sid,
            reason,
            created - timedelta(minutes=2),
            created + timedelta(minutes=30),
            t(confirmed) if confirmed else None,
        )
    for aid, (kind, created, priority) in ALERTS.items():
        await conn.execute(
            "INSERT INTO alerts (id, kind, message, area, priority, status, recipients,"
            " created_at, fanned_out_at, completed_at)"
            " VALUES ($1, $2, $3, '{}', $4, 'completed', $5, $6, $6,"
            "         $6::timestamptz + interval '2 hours')",
            aid,
            kind,
            ALERT_TEXT,
            priority,
            sum(1 for d in DELIVERIES if d[0] == aid),
            t(created),
        )
    await conn.execute("SELECT setval('alerts_id_seq', 100)")
    for aid, zone in ((1, z1), (2, z1), (2, z2)):
        await conn.execute(
            "INSERT INTO alert_targets (alert_id, zone_id) VALUES ($1, $2)", aid, zone["id"]
        )
    for aid, sid, status, sent, final in DELIVERIES:
        created = t(ALERTS[aid][1])
        message_id = f"m{aid}-{sid}" if sent is not None else None
        await conn.execute(
            "INSERT INTO deliveries (alert_id, subscriber_id, priority, status, attempts,"
            " gateway, gateway_message_id, sent_at, final_at)"
            " VALUES ($1, $2, $3, $4, 1, 'sim', $5, $6, $7)",
            aid,
            sid,
            ALERTS[aid][2],
            status,
            message_id,
            created + timedelta(seconds=sent) if sent is not None else None,
            created + timedelta(seconds=final) if final is not None else None,
        )
        if message_id and status in ("delivered", "failed"):
            assert final is not None
            await conn.execute(
                "INSERT INTO delivery_receipts (gateway, gateway_message_id, phone, state,"
                " provider_status, occurred_at, received_at, applied, raw)"
                " VALUES ('sim', $1, $2, $3, $4, $5, $5, true, '{}')",
                message_id,
                phone(sid),
                status,
                "DELIVRD" if status == "delivered" else "UNDELIV",
                created + timedelta(seconds=final),
            )
    for kind, aid, sid, received in INBOUND:
        await conn.execute(
            "INSERT INTO inbound_messages (gateway, phone, subscriber_id, text, kind, alert_id,"
            " received_at) VALUES ('sim', $1, $2, $3, $4, $5, $6)",
            phone(sid),
            sid,
            TIP_TEXT if kind == "tip" else "STOP",
            kind,
            aid,
            t(received),
        )
    return {"z1": (z1["code"], z1["name"]), "z2": (z2["code"], z2["name"])}


async def report(db_url: str, out: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broadcaster",
        "report",
        *args,
        "--out",
        str(out),
        env={**os.environ, "DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, err.decode()


def in_period(when: str | None) -> bool:
    return when is not None and SINCE <= t(when) < UNTIL


def active_at(moment: datetime) -> int:
    n = 0
    for status, confirmed, opted_out, erased in SUBSCRIBERS.values():
        if status == "pending" or confirmed is None or t(confirmed) >= moment:
            continue
        stops = [t(x) for x in (opted_out, erased) if x]
        if not stops or min(stops) >= moment:
            n += 1
    return n


def expected_headline() -> dict[str, str]:
    alerts = {
        a for a, (kind, created, _) in ALERTS.items() if kind == "alert" and in_period(created)
    }
    ours = [d for d in DELIVERIES if d[0] in alerts]
    sent = sum(1 for d in ours if d[3] is not None)
    delivered = [d[4] for d in ours if d[2] == "delivered"]
    median = statistics.median(delivered)
    assert median == 105  # (90 + 120) / 2
    return {
        "alerts": str(len(alerts)),
        "sms-sent": str(sent),
        "delivered": str(len(delivered)),
        "delivered-ratio": f"{100 * len(delivered) / sent:.1f}%",
        "median-time-to-deliver": "1 min 45 s",
        "tips-received": str(sum(1 for i in INBOUND if i[0] == "tip" and in_period(i[3]))),
        "opt-outs": str(sum(1 for s in SUBSCRIBERS.values() if in_period(s[2]))),
        "confirmed-sign-ups": str(sum(1 for s in SIGNUPS if in_period(s[2]))),
        "active-subscribers-at-the-end": str(active_at(UNTIL)),
    }


def headline(html: str) -> dict[str, str]:
    return dict(re.findall(r"<tr id='h-([a-z-]+)'[^>]*><td>[^<]*</td><td>([^<]*)</td>", html))


CHARTS = (
    "Alerts per week",
    "Recipients and delivery ratio per alert",
    "Time to deliver",
    "Tips per alert",
    "Active subscribers over time",
    "Active subscribers per zone",
    "Sign-up reasons",
)


def assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), html
    assert not re.search(r"url\(", html)


def chart_titles(html: str) -> list[str]:
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    titles = []
    for svg in svgs:
        ElementTree.fromstring(svg)  # well-formed XML, so a browser draws all of it
        m = re.match(r"<svg[^>]*>\s*<title>([^<]+)</title>", svg)
        assert m, svg[:200]
        titles.append(m.group(1))
    return titles


async def test_report_from_seeded_data(pool: asyncpg.Pool, db_url: str, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        zones = await seed(conn)
    out = tmp_path / "report.html"
    code, err = await report(db_url, out, "--since", "2026-01-01", "--until", "2026-02-28")
    assert code == 0, err
    assert err == ""
    html = out.read_text()

    assert_self_contained(html)
    assert chart_titles(html) == list(CHARTS)
    assert headline(html) == expected_headline()
    for n in range(1, 11):
        assert phone(n) not in html and phone(n)[1:] not in html and phone(n)[-8:] not in html
    assert ALERT_TEXT not in html and TIP_TEXT not in html
    assert "no alerts in this period" not in html

    # Alerts per week: nine Monday weeks from 29 Dec 2025, one alert in three of them.
    weeks = re.findall(r"<title>(\d\d \w+ \d{4}): alerts (\d+)</title>", html)
    assert weeks[0][0] == "29 Dec 2025" and len(weeks) == 9
    assert {w: int(n) for w, n in weeks if n != "0"} == {
        "05 Jan 2026": 1,
        "12 Jan 2026": 1,
        "02 Feb 2026": 1,
    }
    # Per alert: recipients, delivered, ratio (delivered ÷ sent) and tips.
    assert "<title>#1: recipients 4</title>" in html
    assert "<title>#1: delivered 3</title>" in html
    assert "<title>#2: delivered ratio 67%</title>" in html
    assert "<title>#1: tips 2</title>" in html and "<title>#2: tips 0</title>" in html
    assert "<title>#4:" not in html and "<title>#5:" not in html and "<title>#6:" not in html
    # Time to deliver: 15, 20 | 45 | 90 | 120 | 400 | 1000 | 5000 seconds.
    assert "<title>10 s - 30 s: delivered SMS 2</title>" in html
    assert "<title>2 min - 5 min: delivered SMS 1</title>" in html
    assert "<title>≥ 1 h: delivered SMS 1</title>" in html
    assert "<title>&lt; 10 s: delivered SMS 0</title>" in html
    # Active subscribers at the start of the period and at its end.
    assert f"<title>01 Jan 2026: {active_at(SINCE)}</title>" in html
    assert f"<title>01 Mar 2026: {active_at(UNTIL)}</title>" in html
    # Per zone (active now: the opted-out subscriber 5 is not counted) and sign-up reasons.
    (c1, n1), (c2, n2) = zones["z1"], zones["z2"]
    assert n1.startswith(c1) and n2.startswith(c2)  # shipped names: "2900 Hellerup"
    assert f"<title>{n1}: 2</title>" in html
    assert f"<title>{n2}: 1</title>" in html
    assert "<title>help police: 2</title>" in html
    assert "<title>not given: 1</title>" in html
    assert "stay informed" not in html
    # The alerts table names zones, never texts.
    assert f"<td class='text zones'>{n1}</td>" in html
    assert "<td class='text zones'>drawn area</td>" in html


async def test_empty_period(pool: asyncpg.Pool, db_url: str, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        await seed(conn)
    out = tmp_path / "empty.html"
    code, err = await report(db_url, out, "--since", "2025-06-01", "--until", "2025-06-30")
    assert code == 0, err
    assert err == ""
    html = out.read_text()
    assert_self_contained(html)
    assert "no alerts in this period" in html.lower()
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    # Alerts per week, per alert (two charts) and time to deliver say so over their axes.
    assert sum("no alerts in this period" in svg for svg in svgs) == 4
    assert chart_titles(html) == list(CHARTS)
    assert headline(html)["alerts"] == "0"
    assert headline(html)["delivered-ratio"] == "-"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # An address nothing listens on: the options must fail before a database is needed.
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", "report", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_options_end_in_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "r.html")
    cases = {
        "not a date": ("--since", "2026-13-01", "--out", out),
        "must be before": ("--since", "2026-03-01", "--until", "2026-01-31", "--out", out),
        "cannot write": ("--since", "2026-01-01", "--out", str(tmp_path / "no" / "r.html")),
        "a directory": ("--since", "2026-01-01", "--out", str(tmp_path)),
    }
    for words, args in cases.items():
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("broadcaster: "), result.stderr
        assert words in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_charts_escape_labels_and_thin_them_out() -> None:
    names = [f"<zone {i} & co>" for i in range(100)]
    for svg in (
        charts.bar_chart("A & B", names, [charts.Series("n", list(range(100)))],
                         x_label="x", y_label="y", line=charts.Series("r", [0.5] * 100)),
        charts.hbar_chart("A & B", names, list(range(100)), x_label="x"),
        charts.line_chart("A & B", names, list(range(100)), x_label="x", y_label="y"),
    ):  # fmt: skip
        root = ElementTree.fromstring(svg)
        assert root.findtext("{http://www.w3.org/2000/svg}title") == "A & B"
        labels = [e.text for e in root.iter("{http://www.w3.org/2000/svg}text") if e.text in names]
        assert labels[0] == "<zone 0 & co>"
    bar = ElementTree.fromstring(
        charts.bar_chart("t", names, [charts.Series("n", [1] * 100)], x_label="x", y_label="y")
    )
    shown = [e.text for e in bar.iter("{http://www.w3.org/2000/svg}text") if e.text in names]
    assert 1 < len(shown) <= charts.MAX_LABELS
    empty = charts.bar_chart("t", [], [], x_label="x", y_label="y", empty="nothing here")
    assert "nothing here" in empty
    ElementTree.fromstring(empty)
