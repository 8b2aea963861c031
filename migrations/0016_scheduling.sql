-- Scheduling: send_at is when the caller asked an alert to go (null: at once); not_before is
-- when it may start, decided at creation: send_at, or the end of the quiet hours it falls in for
-- an alert that is not an emergency (ingest/schedule.py). The fan-out claims a queued alert only
-- once not_before has passed; until then GET /v1/alerts shows it as 'scheduled'.
ALTER TABLE alerts ADD COLUMN send_at timestamptz;
ALTER TABLE alerts ADD COLUMN not_before timestamptz;
