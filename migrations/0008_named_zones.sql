-- Named zones: police districts, municipalities, postal codes and custom areas, which alerts
-- target by name ({"zones": [...]}) or postal code ({"postal_codes": [...]}) and by which
-- subscribers may register instead of giving a point (postal codes). See ingest/zones.py.

-- A zone's name is unique across kinds (an alert names zones without saying their kind), compared
-- by name_key: the name case-folded with runs of white space made one blank (zones.name_key()).
-- Postal codes always have a code; codes are unique per kind. geometry is the validated GeoJSON
-- Polygon or MultiPolygon as stored (RFC 7946, [lon, lat]). source says who wrote it last:
-- 'shipped' zones come with the service (src/broadcaster/data/) and are updated by
-- `broadcaster migrate` when the shipped data changes, unless an operator changed them since.
CREATE TABLE zones (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL
                CHECK (kind IN ('police_district', 'municipality', 'postal_code', 'custom')),
    name        text NOT NULL,
    name_key    text NOT NULL UNIQUE,
    code        text,
    geometry    jsonb NOT NULL,
    source      text NOT NULL CHECK (source IN ('shipped', 'api', 'import')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'postal_code' OR code IS NOT NULL)
);
CREATE UNIQUE INDEX zones_kind_code ON zones (kind, code) WHERE code IS NOT NULL;
CREATE INDEX zones_kind ON zones (kind, id);

-- A zone's geometry in the rows an alert's zone has (alert_zones; an alert for named zones
-- copies them), in micro-degrees: outer rings and holes of small polygons, and the cells and
-- pieces large polygons are cut into (ingest/pieces.py). 'core' rows are the pieces of a postal
-- code's core, the area less a band along its border: an alert whose area overlaps a core
-- reaches the subscribers registered by that postal code (fanout.FANOUT_REGISTERED).
CREATE TABLE zone_parts (
    zone_id   bigint NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    part      integer NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('outer', 'hole', 'cell', 'core')),
    ring      polygon,
    boundary  path,
    bbox      box NOT NULL
);
CREATE INDEX zone_parts_zone ON zone_parts (zone_id);
CREATE INDEX zone_parts_core ON zone_parts USING gist (bbox) WHERE kind = 'core';

-- Alert zones gain cells (the bounding box is the whole test). Every row but a hole now has a
-- ring: a cell's is its box, a circle's a polygon around it (for overlap tests with cores).
ALTER TABLE alert_zones DROP CONSTRAINT alert_zones_kind_check;
ALTER TABLE alert_zones
    ADD CONSTRAINT alert_zones_kind_check CHECK (kind IN ('outer', 'hole', 'cell', 'circle'));

-- The named zones an alert was created for, as resolved when it was created (alerts.area keeps
-- the names or codes as the caller gave them).
CREATE TABLE alert_targets (
    alert_id  bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    zone_id   bigint NOT NULL REFERENCES zones (id),
    PRIMARY KEY (alert_id, zone_id)
);

-- Places a subscriber gave as a named zone instead of a point (today: postal codes). A zone
-- somebody registered by cannot be deleted.
CREATE TABLE subscriber_zones (
    subscriber_id  bigint NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    zone_id        bigint NOT NULL REFERENCES zones (id),
    label          text,
    PRIMARY KEY (subscriber_id, zone_id)
);
CREATE INDEX subscriber_zones_zone ON subscriber_zones (zone_id, subscriber_id);

-- Data files shipped with the service and loaded by `broadcaster migrate`, by content hash, so
-- that each version of a file is loaded once.
CREATE TABLE shipped_data (
    name       text PRIMARY KEY,
    sha256     bytea NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);

-- The fan-out reads subscriber ids from the position index itself (index-only scans): a zone
-- cut into hundreds of pieces would otherwise visit each heap page once per piece (347,286 page
-- visits for 475,000 recipients in seven postal codes; the join fell from 1.03 s to 0.36 s, and
-- for a plain box from 0.61 s to 0.25 s). Built anew, so the migration holds a write lock on
-- subscriber_locations while it builds (about 2.5 s per million locations).
CREATE INDEX subscriber_locations_position_covering
    ON subscriber_locations USING gist (position) INCLUDE (subscriber_id);
DROP INDEX subscriber_locations_position;
ALTER INDEX subscriber_locations_position_covering RENAME TO subscriber_locations_position;
