-- Each gateway's account limit is one token bucket in PostgreSQL, shared by every dispatcher
-- (ratelimit.py). Tokens are those left at refilled_at; a taker adds what the rate refilled
-- since then (capped at the burst), takes what it sends, and stamps the time, in one statement
-- under the row lock. The limit so holds for the sum of all processes at every moment, also
-- while they start, join, die or restart: no process needs to know how many others there are.
CREATE TABLE rate_buckets (
    gateway      text PRIMARY KEY,
    tokens       double precision NOT NULL,
    refilled_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
