"""What an alert would do, without creating it: whom it reaches, how its texts go out (encoding,
segments), what that costs, how long it takes and when it would start.

Recipients are counted by the fan-out's own statement part (`fanout.recipients`), run over
zone rows that exist only in this statement: common table expressions named `alert_zones` and
`alert_targets` stand in for the tables of those names (a CTE hides a table of its name), so
nothing is written, not even a sequence number, and the preview cannot drift from what the
fan-out selects.

Counting half a million recipients exactly takes longer than a preview may (a GiST index scan,
a probe of the inactive subscribers and a DISTINCT for every one of them: seconds, see
docs/benchmarks.md). So the located recipients are first estimated from a page sample of
subscriber_locations (TABLESAMPLE SYSTEM, about SAMPLE_ROWS rows: the same statement with
`subscriber_locations` standing for the sample); where that says fewer than EXACT_LIMIT (or the
table holds fewer), everyone is counted. Beyond, the answer is the estimate plus those
registered by postal code, counted (read in full in the same statement), labelled as an
estimate with its margin (95 %, from the variation between the sampled pages: rows on one page
are often alike, see `ratio_estimate`); bench/preview.py measures the real error. A subscriber
with several locations in the zone counts once per sampled location in the estimate.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from broadcaster.dispatch.fanout import recipients
from broadcaster.ingest.alerts import NewAlert
from broadcaster.ingest.geo import PolygonZone, ZoneRow, parse_area

EXACT_LIMIT = 20_000
SAMPLE_ROWS = 10_000
TABLE_ROWS_SECONDS = 60.0

# The alert's zone rows as parameters, in the columns of alert_zones ($1 is the alert id the
# shared statement part asks for; any value does), and its named zones ($9). Without rows given,
# the named zones' rows are copied from zone_parts as create_alert does.
ZONES_GIVEN = """
alert_zones AS (
    SELECT $1::bigint AS alert_id, z.part, z.kind, z.ring::polygon AS ring,
           z.boundary::path AS boundary, z.center::point AS center, z.radius_m,
           z.bbox::box AS bbox
    FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[],
                $8::text[]) AS z(part, kind, ring, boundary, center, radius_m, bbox)
    UNION ALL
    SELECT $1::bigint, dense_rank() OVER (ORDER BY p.zone_id, p.part)::int, p.kind, p.ring,
           p.boundary, NULL::point, NULL::float8, p.bbox
    FROM zone_parts p
    WHERE p.zone_id = ANY($9::bigint[]) AND p.kind <> 'core' AND cardinality($2::int[]) = 0
), alert_targets AS (
    SELECT $1::bigint AS alert_id, t.zone_id FROM unnest($9::bigint[]) AS t(zone_id)
)"""

# A page sample; $10 is the percentage of pages. A CTE cannot name itself without RECURSIVE, so
# the table inside is the real one. Materialised: the statement also counts the sample's rows.
SAMPLED_LOCATIONS = """, subscriber_locations AS MATERIALIZED (
    SELECT subscriber_id, position, (ctid::text::point)[0]::bigint AS page
    FROM subscriber_locations TABLESAMPLE SYSTEM ($10)
)"""


# Location rows, as of the last ANALYZE (-1, never analysed: a small table, counted).
TABLE_ROWS = """
SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'subscriber_locations'::regclass
"""


def _count(ctes: str, area_type: str, by_language: bool) -> str:
    """(language or NULL, recipients) rows of the shared statement under `ctes`."""
    chosen = f"SELECT x.subscriber_id FROM ({recipients(area_type)}) x"
    if by_language:
        return (
            f"WITH {ctes} SELECT s.language, count(*) FROM (SELECT DISTINCT "
            f"r.subscriber_id FROM ({chosen}) r) d JOIN subscribers s ON s.id = d.subscriber_id "
            "GROUP BY 1"
        )
    return f"WITH {ctes} SELECT NULL::text, count(DISTINCT r.subscriber_id) FROM ({chosen}) r"


def _sample(area_type: str, by_language: bool) -> str:
    """(page, language or NULL, sampled rows, recipients among them) of a page sample: the
    shared statement over the sampled locations, its recipients joined back to their page.
    Recipients with no sampled location (those registered by postal code, read in full) come
    in rows whose page is NULL."""
    ctes = ZONES_GIVEN + SAMPLED_LOCATIONS
    language = "s.language" if by_language else "NULL::text"
    joined = "LEFT JOIN subscribers s ON s.id = h.subscriber_id" if by_language else ""
    return (
        f"WITH {ctes}, hits AS (SELECT DISTINCT x.subscriber_id "
        f"FROM ({recipients(area_type)}) x) "
        f"SELECT l.page, {language}, count(*), count(h.subscriber_id) "
        f"FROM subscriber_locations l LEFT JOIN hits h ON h.subscriber_id = l.subscriber_id "
        f"{joined} GROUP BY 1, 2 "
        f"UNION ALL SELECT NULL, {language}, 0, count(*) FROM hits h {joined} "
        "WHERE NOT EXISTS (SELECT 1 FROM subscriber_locations l "
        "WHERE l.subscriber_id = h.subscriber_id) GROUP BY 2"
    )


@dataclass(frozen=True)
class RecipientCount:
    """Recipients, in total and by language where asked (`None` key: not split). `exact`:
    counted; otherwise estimated, within `margin` either way (95 %)."""

    total: int
    by_language: Mapping[str | None, int]
    exact: bool
    margin: int = 0


def _args(alert: NewAlert) -> list[Any]:
    return _row_args(alert.zone.rows() if alert.zone is not None else [], alert.targets)


async def _whole_rows(conn: asyncpg.Connection, alert: NewAlert) -> list[ZoneRow]:
    """The alert's zone uncut (named zones read from their geometry): a sample's points are
    tried against every row, and a large polygon is hundreds of pieces."""
    if isinstance(alert.zone, PolygonZone):
        return alert.zone.whole_rows()
    if alert.zone is not None:
        return alert.zone.rows()
    rows: list[ZoneRow] = []
    for (geometry,) in await conn.fetch(ZONE_GEOMETRIES, list(alert.targets)):
        zone = parse_area(json.loads(geometry) if isinstance(geometry, str) else geometry)
        assert isinstance(zone, PolygonZone)
        rows += zone.whole_rows(first_part=len(rows))
    return rows


ZONE_GEOMETRIES = "SELECT geometry FROM zones WHERE id = ANY($1::bigint[])"


def _row_args(rows: Sequence[ZoneRow], targets: Sequence[int]) -> list[Any]:
    return [
        0,
        [r.part for r in rows],
        [r.kind for r in rows],
        [r.ring for r in rows],
        [r.boundary for r in rows],
        [r.center for r in rows],
        [r.radius_m for r in rows],
        [r.bbox for r in rows],
        list(targets),
    ]


def _area_type(alert: NewAlert) -> str:
    return str(alert.area.get("type", "")) if alert.zone is not None else "Zones"


async def count_recipients(conn: asyncpg.Connection, alert: NewAlert) -> RecipientCount:
    """The alert's recipients, as its fan-out would choose them: counted where a sample says
    they are fewer than EXACT_LIMIT (or the table holds fewer locations), estimated beyond."""
    area_type, args = _area_type(alert), _args(alert)
    by_language = bool(alert.texts)
    located = await _table_rows(conn)
    if located > EXACT_LIMIT:
        percent = min(100.0, 100.0 * SAMPLE_ROWS / located)
        whole = await _whole_rows(conn, alert)
        sampled = await conn.fetch(
            _sample(area_type, by_language), *_row_args(whole, alert.targets), percent
        )
        located_rows = [(r[0], r[1], r[2], r[3]) for r in sampled if r[0] is not None]
        estimate = ratio_estimate(located_rows, located)
        if estimate is not None and estimate.total - estimate.margin > EXACT_LIMIT:
            split = dict(estimate.by_language)
            for page, language, _, n in sampled:
                if page is None and n:
                    split[language] = split.get(language, 0) + n
            return RecipientCount(sum(split.values()), split, False, estimate.margin)
    counted = await conn.fetch(_count(ZONES_GIVEN, area_type, by_language), *args)
    exact = {r[0]: r[1] for r in counted if r[1]}
    return RecipientCount(sum(exact.values()), exact, exact=True)


def ratio_estimate(
    sampled: Sequence[tuple[int, str | None, int, int]], located: float
) -> RecipientCount | None:
    """Recipients among `located` rows from a page sample's (page, language, rows, hits): the
    share of sampled rows that are recipients, times the rows. The margin is that of a
    cluster sample (pages are the clusters, the variance is between them): where a page's rows
    are alike (a bulk import of one town), pages, not rows, are the sample, and the margin
    widens as it should. None with fewer than two pages."""
    pages: dict[int, list[int]] = {}
    by_language: dict[str | None, int] = {}
    for page, language, rows, hits in sampled:
        counts = pages.setdefault(page, [0, 0])
        counts[0] += rows
        counts[1] += hits
        if hits:
            by_language[language] = by_language.get(language, 0) + hits
    n = len(pages)
    rows_total = sum(c[0] for c in pages.values())
    if n < 2 or not rows_total:
        return None
    share = sum(c[1] for c in pages.values()) / rows_total
    mean_rows = rows_total / n
    spread = sum((h - share * m) ** 2 for m, h in pages.values()) / (n - 1)
    margin = 1.96 * math.sqrt(spread / n) / mean_rows * located
    scale = located / rows_total
    split = {language: round(hits * scale) for language, hits in by_language.items()}
    return RecipientCount(sum(split.values()), split, False, max(1, round(margin)))


_rows_seen: tuple[float, float] = (0.0, -1.0)  # (monotonic time, rows)


async def _table_rows(conn: asyncpg.Connection) -> float:
    """subscriber_locations' rows as of its last ANALYZE, looked up at most every
    TABLE_ROWS_SECONDS (autovacuum keeps it near the truth; the estimate's error follows it)."""
    global _rows_seen
    seen_at, rows = _rows_seen
    if rows < 0 or time.monotonic() - seen_at > TABLE_ROWS_SECONDS:
        rows = float(await conn.fetchval(TABLE_ROWS))
        _rows_seen = (time.monotonic(), rows)
    return rows


def recipients_per_text(count: RecipientCount, languages: Sequence[str]) -> dict[str | None, int]:
    """Recipients of each text: those whose language has a text get it (key: the language),
    everyone else the message (key None)."""
    if not languages:
        return {None: count.total}
    per: dict[str | None, int] = {None: 0, **{language: 0 for language in languages}}
    for language, n in count.by_language.items():
        per[language if language in languages else None] += n
    return per
