-- Inbound SMS and tips (citizens/inbound.py, tips.py, tip_forwarding.py).

-- When the gateway says an inbound message was sent (GatewayAPI's senttime; NULL where it does
-- not say), and when a tip reached its alert's tip_webhook.
ALTER TABLE inbound_messages
    ADD COLUMN sent_at timestamptz,
    ADD COLUMN forwarded_at timestamptz;

-- An alert may name the investigating system's URL its tips are posted to.
ALTER TABLE alerts ADD COLUMN tip_webhook text;

-- A tip links to the most recent alert its number got within the tip window: the alerts that
-- can have a delivery sent within it are those not completed before it began (or not yet).
CREATE INDEX alerts_completed ON alerts (completed_at) WHERE kind = 'alert';
-- The alerts being dispatched: a STOP cancels its number's queued deliveries of these, one
-- probe of deliveries' (alert_id, subscriber_id) key each. Notices are alerts too, so without
-- it the table of every notice ever sent would be read.
CREATE INDEX alerts_dispatching ON alerts (id) WHERE status = 'dispatching';

-- Tips waiting to be posted to their alert's tip_webhook, written in the tip's transaction, so
-- none is lost while the receiver is down. A row goes once the receiver answered 2xx; until
-- then due_at is its next try (or the end of a forwarder's lease on it).
CREATE TABLE tip_outbox (
    id                  bigserial PRIMARY KEY,
    inbound_message_id  bigint NOT NULL REFERENCES inbound_messages (id) ON DELETE CASCADE,
    url                 text NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    due_at              timestamptz NOT NULL DEFAULT now(),
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tip_outbox_due ON tip_outbox (due_at, id);
