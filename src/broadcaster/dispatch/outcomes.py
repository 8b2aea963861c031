"""Alert outcomes: when an alert that names a `status_webhook` has ended, its counts are put in
the webhook outbox, once, for webhooks.py to post (signed, retried until acknowledged).

An alert has ended when it is completed, cancelled or expired, no delivery of it is still to be
submitted or in flight (a batch out when it was cancelled is written first), and no delivery
still waits for its receipt ('sent'), or BROADCASTER_OUTCOME_RECEIPT_WAIT_SECONDS have passed
since it ended: some receipts never come (a phone off for days), and the caller should not wait
for them; what is still 'sent' then is counted as such.

Detecting it is a periodic, set-based sweep (`queue_due`, each housekeeping tick of every
dispatcher), not a check on the receipt path. What a sweep costs:
- with no alert waiting to be reported: one scan of the partial index `alerts_outcome_pending`
  (alerts with a webhook not yet reported), which is empty;
- per alert with a webhook that is still being dispatched: that alert's row, refused by its
  status;
- per alert that ended and waits for receipts: a probe of `deliveries_open_by_alert` (empty by
  then) and a walk of its deliveries' (alert_id, subscriber_id) index from the last subscriber
  down to the first delivery still 'sent'. Deliveries go out in that order and their receipts
  come back in it, so the ones still waiting are at the end and the walk is short; at worst it
  reads the alert's deliveries once per tick, for at most the receipt wait;
- per alert reported: its deliveries counted once (as GET /v1/alerts/{id} counts them), and one
  outbox row. Several dispatchers never report one alert twice: the alerts are locked
  (`SKIP LOCKED`) and marked in the statement that writes the rows, and an outbox row per
  alert is unique.
"""

from __future__ import annotations

import asyncpg

# At most this many alerts reported per sweep (the rest in the next).
BATCH = 100

# The deliveries are probed by scalar subqueries, per alert through an index: as NOT EXISTS the
# probe of open deliveries became a merge anti join reading the whole open index (a running
# broadcast's every row) each sweep. tests/test_outcome_webhook.py checks the plan.
QUEUE_DUE = """
WITH due AS (
    SELECT a.id
    FROM alerts a
    WHERE a.status_webhook IS NOT NULL AND a.outcome_queued_at IS NULL
      AND a.status IN ('completed', 'cancelled', 'expired')
      AND (SELECT 1 FROM deliveries d
           WHERE d.alert_id = a.id AND d.status IN ('queued', 'sending') LIMIT 1) IS NULL
      AND (a.completed_at <= now() - $1 * interval '1 second'
           OR (SELECT 1 FROM deliveries d
               WHERE d.alert_id = a.id AND d.status = 'sent'
               ORDER BY d.subscriber_id DESC LIMIT 1) IS NULL)
    ORDER BY a.id
    LIMIT $2
    FOR UPDATE OF a SKIP LOCKED
), marked AS (
    UPDATE alerts a SET outcome_queued_at = now()
    FROM due
    WHERE a.id = due.id
    RETURNING a.id, a.status, a.reference, a.recipients, a.created_at, a.fanned_out_at,
              a.completed_at, a.cancelled_at, a.expires_at, a.status_webhook
)
INSERT INTO webhook_outbox (kind, url, alert_id, body)
SELECT 'outcome', m.status_webhook, m.id, jsonb_build_object(
    'event', 'alert.' || m.status,
    'alert_id', m.id,
    'reference', m.reference,
    'status', m.status,
    'recipients', m.recipients,
    'deliveries', (
        SELECT jsonb_object_agg(s.state, coalesce(c.n, 0))
        FROM unnest(ARRAY['queued', 'sending', 'sent', 'delivered', 'failed', 'expired',
                          'cancelled']) AS s(state)
        LEFT JOIN (SELECT d.status, count(*) AS n FROM deliveries d
                   WHERE d.alert_id = m.id GROUP BY d.status) c ON c.status = s.state),
    'created_at', m.created_at,
    'fanned_out_at', m.fanned_out_at,
    'completed_at', m.completed_at,
    'cancelled_at', m.cancelled_at,
    'expires_at', m.expires_at,
    'reported_at', now())
FROM marked m
ON CONFLICT (alert_id) WHERE kind = 'outcome' DO NOTHING
"""


async def queue_due(conn: asyncpg.Connection | asyncpg.Pool, receipt_wait_seconds: float) -> int:
    """Put the outcome of every alert that has ended (see the module docstring) in the outbox;
    returns how many."""
    status = await conn.execute(QUEUE_DUE, receipt_wait_seconds, BATCH)
    return int(status.rsplit(" ", 1)[-1])
