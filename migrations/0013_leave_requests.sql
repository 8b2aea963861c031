-- Leaving by the web page: a citizen gives the number, the service sends a one-time code to it,
-- and only the right code opts the number out (as STOP by SMS does). A request is kept as a
-- sign-up's code is (hashed, single-use, a few tries), and deleted a day after it expired
-- (retention) or when the number is erased.
CREATE TABLE leave_requests (
    id             bigserial PRIMARY KEY,
    subscriber_id  bigint NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    code_hash      bytea NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    done_at        timestamptz
);
CREATE INDEX leave_requests_subscriber ON leave_requests (subscriber_id, id DESC);
CREATE INDEX leave_requests_expires ON leave_requests (expires_at);
