"""Not a benchmark: seed a database with a quarter of a made-up programme and render
`broadcaster report` from it (docs/report-example.png is a screenshot of the result).

Three thousand subscribers signing up from October 2025 on in the shipped North Zealand postal
codes (a few opting out), sign-ups with reasons, thirty alerts from January to March 2026 to one
or two postal codes each, every active subscriber of those zones a delivery with a receipt a
few seconds to an hour later, and tips. All of it set-based SQL with a fixed random seed, in a
database of its own on the server of DATABASE_URL (dropped first; without it the embedded
server, as for the benchmarks).

    python bench/report_example.py [--out /tmp/report-example.html]
                                   [--screenshot docs/report-example.png]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import fresh_database

from broadcaster.database import connect

NAME = "broadcaster_report_example"

SEED = """
SELECT setseed(0.42);

CREATE TEMP TABLE postal AS
SELECT id, row_number() OVER (ORDER BY code) AS n FROM zones WHERE kind = 'postal_code';

INSERT INTO subscribers (phone, status, source, reason, created_at, confirmed_at)
SELECT '+4530' || lpad(i::text, 6, '0'), 'active', 'web',
       (ARRAY['help_police', 'help_community', 'feel_safer', 'stay_informed',
              'general_interest', 'curious', 'other'])[1 + floor(power(random(), 1.6) * 7)],
       t - interval '3 minutes', t
FROM (SELECT i, timestamptz '2025-10-01' + sqrt(random()) * interval '180 days' AS t
      FROM generate_series(1, 3000) AS i) AS s;

UPDATE subscribers SET status = 'opted_out', opt_out_reason = 'sms STOP',
       opted_out_at = confirmed_at + random() * (timestamptz '2026-03-31' - confirmed_at)
WHERE random() < 0.07;

INSERT INTO subscriber_zones (subscriber_id, zone_id)
SELECT s.id, p.id
FROM (SELECT id, 1 + floor(power(random(), 2) * (SELECT count(*) FROM postal)) AS n
      FROM subscribers) AS s
JOIN postal p ON p.n = s.n;

INSERT INTO signups (subscriber_id, locations, language, reason, source, code_hash, created_at,
                     expires_at, confirmed_at)
SELECT id, '[]', 'da', CASE WHEN random() < 0.08 THEN NULL ELSE reason END, 'web', '\\x00',
       created_at, created_at + interval '30 minutes', confirmed_at
FROM subscribers;

INSERT INTO alerts (message, area, priority, status, recipients, created_at, fanned_out_at,
                    completed_at)
SELECT 'Example alert ' || i, '{}', (ARRAY[0, 1, 1, 2, 2, 2])[1 + floor(random() * 6)],
       'completed', 0, t, t, t + interval '1 hour'
FROM (SELECT i, timestamptz '2026-01-02 08:00+01' + random() * interval '87 days' AS t
      FROM generate_series(1, 30) AS i) AS s
ORDER BY t;

INSERT INTO alert_targets (alert_id, zone_id)
SELECT a.id, p.id
FROM (SELECT id, 1 + floor(power(random(), 2) * (SELECT count(*) FROM postal)) AS n
      FROM alerts
      UNION ALL
      SELECT id, 1 + floor(random() * (SELECT count(*) FROM postal)) FROM alerts
      WHERE id % 3 = 0) AS a
JOIN postal p ON p.n = a.n
ON CONFLICT DO NOTHING;

INSERT INTO deliveries (alert_id, subscriber_id, priority, status, attempts, gateway,
                        gateway_message_id, sent_at, final_at)
SELECT a.id, s.id, a.priority, o.status, 1, 'primary', 'm' || a.id || '-' || s.id,
       CASE WHEN o.status <> 'expired' THEN a.created_at + interval '2 seconds' + o.queue END,
       CASE WHEN o.status <> 'sent' THEN a.created_at + o.queue + o.latency END
FROM alerts a
JOIN (SELECT DISTINCT at.alert_id, sz.subscriber_id
      FROM alert_targets at JOIN subscriber_zones sz ON sz.zone_id = at.zone_id) r
  ON r.alert_id = a.id
JOIN subscribers s ON s.id = r.subscriber_id
 AND s.confirmed_at < a.created_at
 AND (s.opted_out_at IS NULL OR s.opted_out_at > a.created_at)
CROSS JOIN LATERAL (
    SELECT CASE WHEN x < 0.04 THEN 'failed' WHEN x < 0.06 THEN 'sent'
                WHEN x < 0.075 THEN 'expired' ELSE 'delivered' END AS status,
           random() * interval '20 seconds' * (1 + a.priority) AS queue,
           exp(1 + random() * 3 + random() * random() * 4) * interval '1 second' AS latency
    FROM (SELECT random() + s.id * 0 AS x) AS draw) AS o;

UPDATE alerts a SET recipients = (SELECT count(*) FROM deliveries d WHERE d.alert_id = a.id);

INSERT INTO delivery_receipts (gateway, gateway_message_id, phone, state, provider_status,
                               occurred_at, received_at, applied, raw)
SELECT 'primary', d.gateway_message_id, s.phone, d.status,
       CASE d.status WHEN 'delivered' THEN 'DELIVRD' ELSE 'UNDELIV' END,
       d.final_at, d.final_at, true, '{}'
FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
WHERE d.status IN ('delivered', 'failed');

INSERT INTO inbound_messages (gateway, phone, subscriber_id, text, kind, alert_id, received_at)
SELECT 'primary', s.phone, s.id, 'example tip', 'tip', d.alert_id,
       d.final_at + random() * interval '6 hours'
FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
WHERE d.status = 'delivered' AND random() < 0.012 + 0.03 * (d.alert_id % 4 = 0)::int;
"""


async def prepare() -> str:
    url = await fresh_database(NAME)
    conn = await connect(url)
    try:
        await conn.execute(SEED)
    finally:
        await conn.close()
    return url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/report-example.html"))
    parser.add_argument("--screenshot", type=Path, help="a PNG of the page (needs chromium)")
    args = parser.parse_args()
    url = asyncio.run(prepare())
    subprocess.run(
        [sys.executable, "-m", "broadcaster", "report", "--since", "2026-01-01",
         "--until", "2026-03-31", "--out", str(args.out)],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
    )  # fmt: skip
    print(f"wrote {args.out}")
    if args.screenshot:
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            print("no chromium: no screenshot", file=sys.stderr)
            return 1
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--hide-scrollbars",
             f"--screenshot={args.screenshot.resolve()}", "--window-size=1100,3950",
             f"file://{args.out.resolve()}"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
