-- Every CAP 1.2 message the service took (Alert, Update and Cancel alike), kept as received:
-- the audit trail of the exchange with the sending system (docs/cap.md, "Messages kept").
-- A message is written in the transaction that acts on it, so a message that was refused
-- (4xx) is not kept and one that was answered 2xx always is.
--
-- (api_key_id, sender, identifier) is unique: a Cancel is idempotent by it as an Alert is by its
-- alert's idempotency key, and an identifier once used for one message type cannot be used for
-- another. request_hash is over the message's header (identifier, sender, sent, status,
-- msgType, references); body is the document byte for byte, sha256 its digest.
CREATE TABLE cap_messages (
    id            bigserial PRIMARY KEY,
    api_key_id    bigint NOT NULL REFERENCES api_keys (id),
    api_key_name  text NOT NULL,
    request_id    text,
    sender        text NOT NULL,
    identifier    text NOT NULL,
    sent          timestamptz NOT NULL,
    status        text NOT NULL
                  CHECK (status IN ('Actual', 'Exercise', 'System', 'Test', 'Draft')),
    msg_type      text NOT NULL CHECK (msg_type IN ('Alert', 'Update', 'Cancel')),
    "references"  text[] NOT NULL DEFAULT '{}',
    request_hash  bytea NOT NULL,
    body          bytea NOT NULL,
    sha256        bytea NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (api_key_id, sender, identifier)
);

-- What a message did to an alert: created it (an Alert or Update), updated it (an Update that
-- names it; its sending was cut short if it was still going), or cancelled it (a Cancel).
CREATE TABLE cap_message_alerts (
    message_id  bigint NOT NULL REFERENCES cap_messages (id),
    alert_id    bigint NOT NULL REFERENCES alerts (id),
    effect      text NOT NULL CHECK (effect IN ('created', 'updated', 'cancelled')),
    PRIMARY KEY (message_id, alert_id)
);
CREATE INDEX cap_message_alerts_alert ON cap_message_alerts (alert_id);
