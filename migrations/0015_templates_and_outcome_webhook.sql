-- Message templates (ingest/templates.py): a name, and its versions, each with one text per
-- language ({language: text}) and the longest value of each placeholder it was checked with.
-- Storing a name again adds its next version (templates.version is the current one); versions
-- are kept, and an alert keeps the texts it was rendered to whatever comes later.
CREATE TABLE templates (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE template_versions (
    template_id    bigint NOT NULL REFERENCES templates (id),
    version        integer NOT NULL,
    texts          jsonb NOT NULL,
    value_lengths  jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text,
    PRIMARY KEY (template_id, version)
);

-- One outbox for every webhook the service posts (webhooks.py): tips to their alert's
-- tip_webhook (`inbound_message_id`: the body is built when posted, so an erasure or the
-- retention of the tip's number reaches it), and an alert's outcome to its status_webhook
-- (`alert_id`, and the `body` as it was when the alert ended). A row goes once the receiver
-- answered 2xx; until then due_at is its next try (or the end of a poster's lease on it).
-- tip_outbox's rows move here.
CREATE TABLE webhook_outbox (
    id                  bigserial PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('tip', 'outcome')),
    url                 text NOT NULL,
    inbound_message_id  bigint REFERENCES inbound_messages (id) ON DELETE CASCADE,
    alert_id            bigint REFERENCES alerts (id),
    body                jsonb,
    attempts            integer NOT NULL DEFAULT 0,
    due_at              timestamptz NOT NULL DEFAULT now(),
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'tip' OR inbound_message_id IS NOT NULL),
    CHECK (kind <> 'outcome' OR (alert_id IS NOT NULL AND body IS NOT NULL))
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (due_at, id);
INSERT INTO webhook_outbox (kind, url, inbound_message_id, attempts, due_at, last_error, created_at)
SELECT 'tip', url, inbound_message_id, attempts, due_at, last_error, created_at
FROM tip_outbox ORDER BY id;
DROP TABLE tip_outbox;

-- An alert may name the calling system's URL its outcome is posted to once it has ended
-- (dispatch/outcomes.py); outcome_queued_at says when that post was put in the outbox. The
-- sweep that finds alerts to report reads only those with a webhook not reported yet.
ALTER TABLE alerts
    ADD COLUMN status_webhook text,
    ADD COLUMN outcome_queued_at timestamptz;
CREATE INDEX alerts_outcome_pending ON alerts (id)
    WHERE status_webhook IS NOT NULL AND outcome_queued_at IS NULL;
-- One outcome per alert, whatever happens to the sweeps.
CREATE UNIQUE INDEX webhook_outbox_outcome ON webhook_outbox (alert_id) WHERE kind = 'outcome';
