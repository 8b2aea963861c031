"""What an alert would do, without creating it: whom it reaches, how its texts go out (encoding,
segments), what that costs, how long it takes and when it would start.

Recipients are counted by the fan-out's own statement part (`fanout.recipients`), run over
zone rows that exist only in this statement: common table expressions named `alert_zones` and
`alert_targets` stand in for the tables of those names (a CTE hides a table of its name), so
nothing is written, not even a sequence number, and the preview cannot drift from what the
fan-out selects.

Counting half a million recipients exactly takes longer than a preview may (a GiST index scan,
a probe of the inactive subscribers and a DISTINCT for every one of them: 0.3 to 1 s, see
docs/benchmarks.md). So where there are more than EXACT_LIMIT subscribers, the recipients are
first estimated from a sample of subscribers: the id range cut into SAMPLE_IDS equal strata and
one id drawn at random in each (`SAMPLED_SUBSCRIBERS`), and the same statement run over the
drawn subscribers' locations and postal-code registrations (found by their subscriber_id
indexes; no index or column was added for it), so a subscriber counts once however many of
their locations are inside, and those registered by postal code are sampled like everyone
else. The share of draws that are recipients, times the ids, is the estimate, with the 95 %
margin of a simple random sample (`sample_estimate`). Where that says fewer than EXACT_LIMIT,
everyone is counted: exact is better than estimated, and up to there it takes no longer.

A zone holding a small share of the subscribers needs more draws for the same relative error
(`draws_for`: (1 - p) / (p e^2) for a standard error e of TARGET_ERROR; a circle of a tenth of
them, 23,000). A draw costs an index descent and a heap visit, so where the first sample says
more than 1.25 times its draws are needed, the answer comes from a sample of
subscriber_locations of that size instead (`_located_estimate`: the share of sampled locations
the statement chooses, times the table's rows as of its last ANALYZE, plus the postal-code
registrants, few in such a zone, counted; a subscriber with several locations inside counts
once per sampled location there). First a page sample (TABLESAMPLE SYSTEM: a page read per
hundred rows), with the margin of a cluster sample (`ratio_estimate`); it is kept where that
margin is at most PAGES_ALIKE_LIMIT times the margin single rows would have, i.e. the pages
hold mixed rows. Where pages are alike (a town each), a row sample of the same size follows
(TABLESAMPLE BERNOULLI: every page read, rows kept one by one, the margin of single rows).

Why single subscribers rather than pages (TABLESAMPLE SYSTEM alone, the first version): a
table written town by town (an import) has pages of alike rows, so a page sample is a few
dozen samples, not thousands: 9 % off on average, 35 % at worst, for the postal-code benchmark.
A draw is one subscriber wherever it is stored, and the strata follow the ids, which follow the
order of writing, so a town imported at once is sampled evenly rather than by chance.
bench/preview.py measures error and time (docs/benchmarks.md, the preview row).
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
SAMPLE_IDS = 4_000  # draws of the sample of subscribers
MAX_SAMPLE_ROWS = 40_000  # rows of the sample of locations at most
TARGET_ERROR = 0.02  # relative standard error the samples aim for

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
# one id drawn at random in each (strata that do not end on a whole id may both draw the id they
# share, so `sampled` is joined with its repeats: every id is drawn $12 / $11 times on
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

# A sample of the locations for a zone that holds a small share of them, with each row's page:
# SYSTEM keeps $10 % of the pages (cheap), BERNOULLI $10 % of the rows (every page read).
# Materialised: the statement also counts its rows.
SAMPLED_LOCATIONS = """, subscriber_locations AS MATERIALIZED (
    SELECT subscriber_id, position, (ctid::text::point)[0]::bigint AS page
    FROM subscriber_locations TABLESAMPLE {method} ($10)
)"""
# A page sample is kept where its pages vary no more than this times single rows would (the
# ratio of its margin to a row sample's of the same size): pages of mixed rows, not a town each.
PAGES_ALIKE_LIMIT = 1.5

# Location rows, as of the last ANALYZE.
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


def _located_sample(area_type: str, by_language: bool, method: str) -> str:
    """(page, language or NULL, sampled rows, recipients among them) of a sample of the
    locations: the shared statement over the sampled locations, its recipients joined back to
    them (one join both ways). Recipients with no sampled location (those registered by postal
    code, read in full) come in rows whose page is NULL."""
    ctes = ZONES_GIVEN + SAMPLED_LOCATIONS.format(method=method)
    language = "s.language" if by_language else "NULL::text"
    joined = "LEFT JOIN subscribers s ON s.id = h.subscriber_id" if by_language else ""
    return (
        f"WITH {ctes}, hits AS (SELECT DISTINCT x.subscriber_id "
        f"FROM ({recipients(area_type)}) x) "
        f"SELECT l.page, {language}, count(l.subscriber_id), count(h.subscriber_id) "
        f"FROM subscriber_locations l FULL JOIN hits h ON h.subscriber_id = l.subscriber_id "
        f"{joined} GROUP BY 1, 2"
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
        whole = _row_args(await _whole_rows(conn, alert), alert.targets)
        draws = min(SAMPLE_IDS, ids)
        sample = _sample(area_type, by_language)
        estimate = sample_estimate(
            _hits(await conn.fetch(sample, *whole, low, ids, draws)), draws, ids
        )
        if estimate.total - estimate.margin > EXACT_LIMIT:
            if draws_for(estimate.total / ids) > draws * 5 // 4:
                return await _located_estimate(conn, alert, whole, estimate.total)
            return estimate
    counted = await conn.fetch(_count(ZONES_GIVEN, area_type, by_language), *args)
    exact = {r[0]: r[1] for r in counted if r[1]}
    return RecipientCount(sum(exact.values()), exact, exact=True)


async def _located_estimate(
    conn: asyncpg.Connection, alert: NewAlert, whole: list[Any], first: int
) -> RecipientCount:
    """A zone holding a small share of the subscribers (`first`, the estimate from the sample
    of them): a sample of the locations large enough for TARGET_ERROR, scaled to the table's
    rows, and those registered by postal code (few in such a zone) counted. A page sample
    first; where its pages turn out alike (more than PAGES_ALIKE_LIMIT), a row sample."""
    located = max(1.0, float(await conn.fetchval(TABLE_ROWS)))
    percent = min(100.0, 100.0 * min(MAX_SAMPLE_ROWS, draws_for(first / located)) / located)
    for method in ("SYSTEM", "BERNOULLI"):
        sampled = await conn.fetch(
            _located_sample(_area_type(alert), bool(alert.texts), method), *whole, percent
        )
        rows = [(r[0], r[1], r[2], r[3]) for r in sampled if r[0] is not None]
        estimate = ratio_estimate(rows, located)
        if estimate is None:
            continue
        n = sum(r[2] for r in rows)
        share = sum(r[3] for r in rows) / n
        single = 1.96 * math.sqrt(share * (1 - share) / n) * located
        if method == "BERNOULLI" or estimate.margin <= PAGES_ALIKE_LIMIT * max(single, 1.0):
            # Rows kept one by one vary as single rows, however many share a page.
            margin = round(single) if method == "BERNOULLI" else estimate.margin
            split = dict(estimate.by_language)
            for page, language, _, hits in sampled:
                if page is None and hits:
                    split[language] = split.get(language, 0) + hits
            return RecipientCount(sum(split.values()), split, False, max(1, margin))
    return RecipientCount(first, {None: first}, False, first)


def _hits(rows: Sequence[asyncpg.Record]) -> dict[str | None, int]:
    return {r[0]: r[1] for r in rows}


def draws_for(share: float) -> int:
    """Draws (subscribers or locations) that estimate a share p of them within TARGET_ERROR
    (one standard error, relative): (1 - p) / (p e^2), large where the zone holds few."""
    if share <= 0:
        return MAX_SAMPLE_ROWS
    return math.ceil((1 - min(share, 1.0)) / (share * TARGET_ERROR**2))


def sample_estimate(hits: Mapping[str | None, int], draws: int, ids: int) -> RecipientCount:
    """Recipients among `ids` subscriber ids from `draws` of them drawn evenly at random (one
    per stratum) of which `hits` (by language) are recipients: the share of recipients among
    the draws, times the ids. The margin is that of a simple random sample of the draws (95 %,
    without replacement); drawing one id per stratum of neighbouring ids varies less where
    neighbours are alike (a town imported at once), so the margin errs on the wide side
    there."""
    scale = ids / draws
    split = {language: round(n * scale) for language, n in hits.items() if n}
    share = min(1.0, sum(hits.values()) / draws)
    unsampled = max(0.0, 1 - draws / ids)
    margin = 1.96 * math.sqrt(share * (1 - share) / draws * unsampled) * ids
    return RecipientCount(sum(split.values()), split, False, max(1, round(margin)))


def ratio_estimate(
    sampled: Sequence[tuple[int, str | None, int, int]], located: float
) -> RecipientCount | None:
    """Recipients among `located` rows from a sample's (page, language, rows, hits): the
    share of sampled rows that are recipients, times the rows. The margin is that of a
    cluster sample (pages are the clusters, the variance is between them): where a page's rows
    are alike (a bulk import of one town), pages, not rows, are the sample, and the margin
    widens as it should; a row sample keeps a row or two of a page, and its margin is about
    that of single rows. None with fewer than two pages."""
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


def recipients_per_text(count: RecipientCount, languages: Sequence[str]) -> dict[str | None, int]:
    """Recipients of each text: those whose language has a text get it (key: the language),
    everyone else the message (key None)."""
    if not languages:
        return {None: count.total}
    per: dict[str | None, int] = {None: 0, **{language: 0 for language in languages}}
    for language, n in count.by_language.items():
        per[language if language in languages else None] += n
    return per
