-- Live dispatchers announce themselves here; each takes an equal share of every gateway's
-- rate limit, so the limit holds for the sum of all dispatcher processes.
CREATE TABLE dispatchers (
    worker        text PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE alerts ADD COLUMN cancelled_at timestamptz;
