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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from broadcaster.dispatch.fanout import recipients
from broadcaster.ingest.alerts import NewAlert
from broadcaster.ingest.geo import PolygonZone, ZoneRow, parse_area

EXACT_LIMIT = 20_000
SAMPLE_IDS = 6_000  # the first sample's draws
MAX_SAMPLE_IDS = 40_000  # draws at most, both samples together
TARGET_ERROR = 0.0125  # relative standard error a second sample aims for

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

# A sample of subscribers by id: the ids from $10 to $10 + $11 - 1 cut into $12 equal strata,
# one id drawn at random in each (a stratum narrower than one id may draw an id its neighbour
# drew too, so `sampled` is joined with its repeats: every id is drawn $12 / $11 times on
# average). The located and registered rows of the drawn subscribers stand in for the tables of
# those names (a CTE cannot name itself without RECURSIVE, so the table inside is the real one),
# found by their subscriber_id indexes; materialised, so that the statement meets only them.
SAMPLED_SUBSCRIBERS = """, sampled AS MATERIALIZED (
    SELECT ($10::bigint + floor((j + random()) * $11::float8 / $12::int))::bigint AS id
    FROM generate_series(0, $12::int - 1) j
), subscriber_locations AS MATERIALIZED (
    SELECT l.subscriber_id, l.position FROM subscriber_locations l
    WHERE l.subscriber_id = ANY(ARRAY(SELECT id FROM sampled))
), subscriber_zones AS MATERIALIZED (
    SELECT r.subscriber_id, r.zone_id FROM subscriber_zones r
    WHERE r.subscriber_id = ANY(ARRAY(SELECT id FROM sampled))
)"""

# The frame the sample is drawn from: every subscriber id there is.
ID_RANGE = "SELECT min(id), max(id) FROM subscribers"


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
    """(language or NULL, drawn ids that are recipients) of a sample of subscribers: the
    shared statement over their rows, its recipients joined back to the draws."""
    language = "s.language" if by_language else "NULL::text"
    joined = "JOIN subscribers s ON s.id = d.subscriber_id" if by_language else ""
    return (
        f"WITH {ZONES_GIVEN + SAMPLED_SUBSCRIBERS}, hits AS (SELECT DISTINCT x.subscriber_id "
        f"FROM ({recipients(area_type)}) x) "
        f"SELECT {language}, count(*) FROM sampled p JOIN hits d ON d.subscriber_id = p.id "
        f"{joined} GROUP BY 1"
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
    they are fewer than EXACT_LIMIT (or there are fewer subscribers), estimated beyond."""
    area_type, args = _area_type(alert), _args(alert)
    by_language = bool(alert.texts)
    low, high = await conn.fetchrow(ID_RANGE)
    ids = 0 if low is None else high - low + 1
    if ids > EXACT_LIMIT:
        sample = _sample(area_type, by_language)
        whole = _row_args(await _whole_rows(conn, alert), alert.targets)
        draws = min(SAMPLE_IDS, ids)
        hits = _hits(await conn.fetch(sample, *whole, low, ids, draws))
        estimate = sample_estimate(hits, draws, ids)
        if estimate.total - estimate.margin > EXACT_LIMIT:
            more = min(MAX_SAMPLE_IDS, ids, draws_for(estimate.total / ids)) - draws
            if more > draws // 4:
                for language, n in _hits(await conn.fetch(sample, *whole, low, ids, more)).items():
                    hits[language] = hits.get(language, 0) + n
                estimate = sample_estimate(hits, draws + more, ids, stages=2)
            return estimate
    counted = await conn.fetch(_count(ZONES_GIVEN, area_type, by_language), *args)
    exact = {r[0]: r[1] for r in counted if r[1]}
    return RecipientCount(sum(exact.values()), exact, exact=True)


def _hits(rows: Sequence[asyncpg.Record]) -> dict[str | None, int]:
    return {r[0]: r[1] for r in rows}


def draws_for(share: float) -> int:
    """Draws that estimate a share of the subscribers within TARGET_ERROR (one standard
    error, relative): (1 - p) / (p e^2), large where the zone holds few of them."""
    if share <= 0:
        return MAX_SAMPLE_IDS
    return math.ceil((1 - min(share, 1.0)) / (share * TARGET_ERROR**2))


def sample_estimate(
    hits: Mapping[str | None, int], draws: int, ids: int, stages: int = 1
) -> RecipientCount:
    """Recipients among `ids` subscriber ids from `draws` of them drawn evenly at random (one
    per stratum) of which `hits` (by language) are recipients: the share of recipients among
    the draws, times the ids. The margin is that of a simple random sample of the draws (95 %;
    drawn without replacement by one sample, with the finite population correction, by two
    independent ones without it); drawing one id per stratum of neighbouring ids varies less
    where neighbours are alike (a town imported at once), so the margin errs on the wide side
    there."""
    scale = ids / draws
    split = {language: round(n * scale) for language, n in hits.items() if n}
    share = min(1.0, sum(hits.values()) / draws)
    unsampled = max(0.0, 1 - draws / ids) if stages == 1 else 1.0
    margin = 1.96 * math.sqrt(share * (1 - share) / draws * unsampled) * ids
    return RecipientCount(sum(split.values()), split, False, max(1, round(margin)))


def recipients_per_text(count: RecipientCount, languages: Sequence[str]) -> dict[str | None, int]:
    """Recipients of each text: those whose language has a text get it (key: the language),
    everyone else the message (key None)."""
    if not languages:
        return {None: count.total}
    per: dict[str | None, int] = {None: 0, **{language: 0 for language in languages}}
    for language, n in count.by_language.items():
        per[language if language in languages else None] += n
    return per
