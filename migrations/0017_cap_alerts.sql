-- CAP 1.2 alerts (ingest/cap.py): the message's sender and identifier (its idempotency key,
-- and what a later Cancel or Update names in <references>), its status and type.
-- A status other than Actual (Exercise, System, Test, Draft) is stored but never sent: such an
-- alert is completed in the transaction that creates it, and the constraint below keeps it from
-- ever being queued or dispatched, whatever a later statement tries.
ALTER TABLE alerts
    ADD COLUMN cap_sender text,
    ADD COLUMN cap_identifier text,
    ADD COLUMN cap_status text
        CHECK (cap_status IN ('Actual', 'Exercise', 'System', 'Test', 'Draft')),
    ADD COLUMN cap_msg_type text CHECK (cap_msg_type IN ('Alert', 'Update'));
ALTER TABLE alerts ADD CONSTRAINT alerts_cap_not_actual_never_sent
    CHECK (coalesce(cap_status, 'Actual') = 'Actual' OR status IN ('completed', 'cancelled'));
CREATE INDEX alerts_cap_message ON alerts (cap_sender, cap_identifier)
    WHERE cap_identifier IS NOT NULL;
