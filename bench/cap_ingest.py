"""CAP 1.2 ingest: how long POST /v1/alerts with a CAP document takes to answer (202, the alert
committed) for a zone where 500,000 subscribers live, beside the same alert as JSON.

Ingest is the API's answer, not the fan-out: the alert is committed with its zone and the
dispatchers are woken, and the fan-out runs later in a dispatcher. Like the JSON path, the
answer's cost does not grow with the recipients (no dispatcher runs here, so the figure is the
API and PostgreSQL alone). `broadcaster api` runs as a child process; requests go one at a time,
the cases in turn.

Cases: `polygon` (the box everyone lives in, as a CAP polygon), `areas` (that polygon, a circle
and three postal codes in three <area>s, in Danish and English), and for comparison as JSON:
`json` (the box) and `json_postal_codes` (the three postal codes).

    python bench/cap_ingest.py [--subscribers 500000] [--samples 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BOX,
    ZONE,
    children,
    fresh_database,
    postgres_version,
    report,
    run,
    seed_box,
    service_env,
    start_api,
)

from broadcaster.auth import create_api_key
from broadcaster.database import connect

NS = "urn:oasis:names:tc:emergency:cap:1.2"
CASES = ("polygon", "areas", "json", "json_postal_codes")
POSTAL_CODES = ("3400", "3480", "3450")
POLYGON = " ".join(
    f"{lat},{lon}"
    for lon, lat in [
        (BOX[0], BOX[1]),
        (BOX[2], BOX[1]),
        (BOX[2], BOX[3]),
        (BOX[0], BOX[3]),
        (BOX[0], BOX[1]),
    ]
)
AREAS = {
    "polygon": f"<area><areaDesc>Hillerød</areaDesc><polygon>{POLYGON}</polygon></area>",
    "areas": (
        f"<area><areaDesc>Hillerød</areaDesc><polygon>{POLYGON}</polygon></area>"
        "<area><areaDesc>Fredensborg</areaDesc><circle>55.97,12.40 2.5</circle></area>"
        "<area><areaDesc>Postnumre</areaDesc>"
        + "".join(
            f"<geocode><valueName>postalCode</valueName><value>{c}</value></geocode>"
            for c in POSTAL_CODES
        )
        + "</area>"
    ),
}


def cap_document(case: str, identifier: str) -> bytes:
    infos = [("da-DK", "Politiet: indbrud i området", "Se noget? Ring 114.")]
    if case == "areas":
        infos.append(("en-GB", "Police: burglaries in the area", "Seen anything? Call 114."))
    body = "".join(
        f"<info><language>{lang}</language><category>Security</category><event>Indbrud</event>"
        "<urgency>Immediate</urgency><severity>Moderate</severity>"
        f"<certainty>Observed</certainty><headline>{headline}</headline>"
        f"<instruction>{instruction}</instruction>{AREAS[case]}</info>"
        for lang, headline, instruction in infos
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><alert xmlns="{NS}">'
        f"<identifier>{identifier}</identifier><sender>bench@politi.dk</sender>"
        "<sent>2026-12-07T20:00:00+01:00</sent><status>Actual</status>"
        f"<msgType>Alert</msgType><scope>Public</scope>{body}</alert>"
    ).encode()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _post(http: aiohttp.ClientSession, api: str, case: str, i: int) -> float:
    """One alert of `case`; milliseconds to the answer."""
    if case.startswith("json"):
        area = ZONE if case == "json" else {"postal_codes": list(POSTAL_CODES)}
        kwargs: dict = {
            "json": {"message": "Politiet: indbrud i området", "area": area},
            "headers": {"Idempotency-Key": f"{case}-{i}"},
        }
    else:
        kwargs = {
            "data": cap_document(case, f"{case}-{i}"),
            "headers": {"Content-Type": "application/cap+xml"},
        }
    started = time.perf_counter()
    async with http.post(f"{api}/v1/alerts", **kwargs) as r:
        await r.read()
        assert r.status == 202, (r.status, await r.text())
    return (time.perf_counter() - started) * 1000


async def _time(http: aiohttp.ClientSession, api: str, samples: int) -> dict[str, list[float]]:
    """The cases in turn, one request at a time, so that a machine whose speed moves (shared
    with other work) weighs on each alike; the first 10 rounds warm up."""
    took: dict[str, list[float]] = {case: [] for case in CASES}
    for i in range(samples + 10):
        for case in CASES:
            ms = await _post(http, api, case, i)
            if i >= 10:
                took[case].append(ms)
    return took


async def main(subscribers: int, samples: int) -> None:
    url = await fresh_database("broadcaster_bench_cap")
    await seed_box(url, subscribers)
    conn = await connect(url)
    try:
        key = await create_api_key(conn, "bench")
        population = await conn.fetchval(
            "SELECT count(DISTINCT subscriber_id) FROM subscriber_locations "
            "WHERE position <@ box(point($1 * 1e6, $2 * 1e6), point($3 * 1e6, $4 * 1e6))",
            *BOX,
        )
    finally:
        await conn.close()
    with children() as (started, log_dir):
        writes = {"BROADCASTER_WRITES_PER_KEY_PER_MINUTE": "1000000"}
        api = start_api(started, log_dir, service_env(url, None, writes))
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            results = await _time(http, api, samples)
    figures = {
        "subscribers": subscribers,
        "zone_population": population,
        "samples": samples,
        **{
            f"{case}_ms": {
                "p50": _pct(took, 0.5),
                "p99": _pct(took, 0.99),
                "max": round(max(took), 1),
                "mean": round(statistics.fmean(took), 1),
            }
            for case, took in results.items()
        },
        "postgres": await postgres_version(url),
    }
    report(
        "cap_ingest",
        figures,
        f"CAP alert for a zone of {population:,} subscribers answered: polygon p50 "
        f"{figures['polygon_ms']['p50']} / p99 {figures['polygon_ms']['p99']} ms, three areas "
        f"in two languages p50 {figures['areas_ms']['p50']} / p99 {figures['areas_ms']['p99']} "
        f"ms; as JSON the same polygon p50 {figures['json_ms']['p50']} / p99 "
        f"{figures['json_ms']['p99']} ms, the three postal codes p50 "
        f"{figures['json_postal_codes_ms']['p50']} / p99 {figures['json_postal_codes_ms']['p99']} "
        f"ms ({samples} each)",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    run(main(args.subscribers, args.samples))
