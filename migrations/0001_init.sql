-- Subscribers, their locations, alerts with their zones, one delivery per alert x subscriber,
-- raw delivery receipts and API keys. Geography uses PostgreSQL's built-in point/polygon/box types
-- with GiST indexes (no PostGIS). Points are (lon, lat) as in GeoJSON, in micro-degrees (1e-6 deg):
-- PostgreSQL's geometric operators use a fixed absolute tolerance of 1e-6, which in plain degrees
-- would blur zone edges by metres.

CREATE TABLE subscribers (
    id          bigserial PRIMARY KEY,
    phone       text NOT NULL UNIQUE CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    language    text NOT NULL DEFAULT 'da',
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'pending', 'opted_out')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriber_locations (
    id             bigserial PRIMARY KEY,
    subscriber_id  bigint NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    label          text,
    position       point NOT NULL
);
CREATE INDEX subscriber_locations_position ON subscriber_locations USING gist (position);
CREATE INDEX subscriber_locations_subscriber ON subscriber_locations (subscriber_id);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- priority: 0 emergency, 1 high, 2 normal (lower is sooner).
CREATE TABLE alerts (
    id               bigserial PRIMARY KEY,
    message          text NOT NULL,
    area             jsonb NOT NULL,
    priority         smallint NOT NULL CHECK (priority BETWEEN 0 AND 2),
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'dispatching', 'completed', 'expired', 'cancelled')),
    reference        text,
    expires_at       timestamptz,
    api_key_id       bigint REFERENCES api_keys (id),
    idempotency_key  text,
    request_hash     bytea,
    recipients       integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    fanned_out_at    timestamptz,
    completed_at     timestamptz,
    UNIQUE (api_key_id, idempotency_key)
);
CREATE INDEX alerts_queued ON alerts (priority, id) WHERE status = 'queued';

-- The zone of an alert: outer rings and holes of (Multi)Polygons, or one circle.
-- part groups a hole with its outer ring.
CREATE TABLE alert_zones (
    alert_id  bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    part      integer NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('outer', 'hole', 'circle')),
    ring      polygon,
    boundary  path,
    center    point,
    radius_m  double precision,
    bbox      box NOT NULL
);
CREATE INDEX alert_zones_alert ON alert_zones (alert_id);

-- One row per alert x subscriber. due_at is when the row may next be claimed: the retry time
-- while queued, the lease deadline while sending (so a crashed worker's rows are reclaimed).
-- alert_id and subscriber_id carry no foreign-key constraints on purpose: a fan-out inserts
-- hundreds of thousands of rows in one statement, and the per-row constraint checks were more
-- than half of its time. Rows are only ever created by the fan-out from existing alerts and
-- subscribers; alerts are never deleted, and deleting a subscriber deletes their deliveries
-- (the subscribers_delete_deliveries trigger below).
CREATE TABLE deliveries (
    id                  bigserial PRIMARY KEY,
    alert_id            bigint NOT NULL,
    subscriber_id       bigint NOT NULL,
    priority            smallint NOT NULL,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'failed',
                                          'expired', 'cancelled')),
    attempts            integer NOT NULL DEFAULT 0,
    due_at              timestamptz NOT NULL DEFAULT now(),
    claimed_by          text,
    gateway             text,
    gateway_message_id  text,
    error               text,
    sent_at             timestamptz,
    final_at            timestamptz,
    UNIQUE (alert_id, subscriber_id)
);
CREATE INDEX deliveries_due ON deliveries (priority, due_at, id)
    WHERE status IN ('queued', 'sending');
CREATE INDEX deliveries_open_by_alert ON deliveries (alert_id)
    WHERE status IN ('queued', 'sending');
-- The write-back finds a worker's rows in flight through this small index whatever the
-- statistics say (they are always few: loops x batch size).
CREATE INDEX deliveries_in_flight ON deliveries (claimed_by) WHERE status = 'sending';
-- Receipts find their delivery by message id and, where one id covers a whole batch
-- (GatewayAPI), by subscriber too: without the second column a receipt would scan the batch.
CREATE INDEX deliveries_gateway_message ON deliveries (gateway_message_id, subscriber_id)
    WHERE gateway_message_id IS NOT NULL;

CREATE FUNCTION delete_subscriber_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Through the (alert_id, subscriber_id) index, one probe per alert, rather than a scan.
    DELETE FROM deliveries
    WHERE alert_id = ANY(ARRAY(SELECT id FROM alerts)) AND subscriber_id = OLD.id;
    RETURN OLD;
END $$;
CREATE TRIGGER subscribers_delete_deliveries AFTER DELETE ON subscribers
    FOR EACH ROW EXECUTE FUNCTION delete_subscriber_deliveries();

-- Every receipt as it arrived, for audit. applied is false while no delivery matched yet
-- (a receipt can beat our write of the send result); it is applied when the send is recorded.
CREATE TABLE delivery_receipts (
    id                  bigserial PRIMARY KEY,
    gateway             text NOT NULL,
    gateway_message_id  text NOT NULL,
    phone               text,
    state               text NOT NULL,
    provider_status     text NOT NULL,
    error               text,
    occurred_at         timestamptz,
    received_at         timestamptz NOT NULL DEFAULT now(),
    applied             boolean NOT NULL DEFAULT false,
    raw                 jsonb NOT NULL
);
CREATE INDEX delivery_receipts_pending ON delivery_receipts (gateway_message_id)
    WHERE NOT applied;
CREATE INDEX delivery_receipts_recent_pending ON delivery_receipts (received_at)
    WHERE NOT applied;
