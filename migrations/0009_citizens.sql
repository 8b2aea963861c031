-- Citizens: sign-up with a one-time code, SMS keywords and tips, notices, throttles.

-- A notice is a one-off SMS to one number that is not an alert to a zone: a sign-up code, the
-- answer to a keyword. It travels as an alert of kind 'notice' with its one delivery, so it
-- gets the gateways, rate limits, retries, fail-over and receipts of every other SMS. Unlike an
-- alert's, a notice's delivery goes to a subscriber who is not active (a code to a pending
-- number, the confirmation of a STOP). Its text is blanked once it is final (housekeeping).
ALTER TABLE alerts ADD COLUMN kind text NOT NULL DEFAULT 'alert'
    CHECK (kind IN ('alert', 'notice'));

-- Why a citizen signed up (optional), and how.
ALTER TABLE subscribers
    ADD COLUMN reason text CHECK (reason IN ('help_police', 'help_community', 'feel_safer',
                                             'stay_informed', 'general_interest', 'curious',
                                             'other')),
    ADD COLUMN source text NOT NULL DEFAULT 'api'
        CHECK (source IN ('api', 'import', 'web', 'sms')),
    ADD COLUMN confirmed_at timestamptz;

-- A sign-up waiting for its code. What the citizen asked for (locations, language, reason) is
-- applied to the subscriber only when the code is confirmed, so nobody can change someone
-- else's areas, or opt a number back in, without the code sent to that number.
CREATE TABLE signups (
    id             bigserial PRIMARY KEY,
    subscriber_id  bigint NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    locations      jsonb NOT NULL,
    language       text NOT NULL,
    reason         text,
    source         text NOT NULL,
    code_hash      bytea NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    confirmed_at   timestamptz
);
CREATE INDEX signups_subscriber ON signups (subscriber_id, id DESC);

-- Fixed-window counters shared by every API process: sign-up SMS per number and per client,
-- code attempts per client. Keys are hashes, never a phone number or an address in clear.
CREATE TABLE throttles (
    key           bytea NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL,
    PRIMARY KEY (key, window_start)
);

-- Every inbound SMS: a keyword (what it did is `kind`) or a tip, linked to the alert it answers
-- where there is one. phone is nulled after the retention period, text is kept for the tip.
CREATE TABLE inbound_messages (
    id                  bigserial PRIMARY KEY,
    gateway             text NOT NULL,
    gateway_message_id  text,
    phone               text,
    subscriber_id       bigint REFERENCES subscribers (id) ON DELETE SET NULL,
    text                text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('stop', 'start', 'join', 'help', 'tip')),
    alert_id            bigint REFERENCES alerts (id),
    received_at         timestamptz NOT NULL DEFAULT now(),
    raw                 jsonb NOT NULL DEFAULT '{}'
);
-- A gateway that posts an inbound message twice (a retry after a lost answer) stores it once.
CREATE UNIQUE INDEX inbound_messages_gateway_id ON inbound_messages (gateway, gateway_message_id)
    WHERE gateway_message_id IS NOT NULL;
CREATE INDEX inbound_messages_tips ON inbound_messages (alert_id, id DESC) WHERE kind = 'tip';
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);
