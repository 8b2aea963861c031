-- Privacy: erasure of a subscriber on request, an append-only audit log.

-- An erased subscriber keeps its row, anonymous, so past deliveries still count: no number, no
-- locations, status 'erased'. erased_hash (SHA-256 of the number) lets a bulk import refuse to
-- re-subscribe a number whose owner asked to be erased; it does not give the number back to a
-- reader of the table (a new sign-up by the citizen, with its code, is not refused).
ALTER TABLE subscribers ALTER COLUMN phone DROP NOT NULL;
ALTER TABLE subscribers DROP CONSTRAINT subscribers_status_check;
ALTER TABLE subscribers ADD CONSTRAINT subscribers_status_check
    CHECK (status IN ('active', 'pending', 'opted_out', 'erased'));
ALTER TABLE subscribers
    ADD COLUMN erased_at timestamptz,
    ADD COLUMN erased_hash bytea,
    ADD CONSTRAINT subscribers_erased_have_no_phone CHECK (status <> 'erased' OR phone IS NULL);
CREATE INDEX subscribers_erased_hash ON subscribers (erased_hash) WHERE erased_hash IS NOT NULL;

-- Who did what, when, with which request: alerts created and cancelled, subscribers erased, API
-- keys created and revoked. Rows are only ever inserted (the trigger refuses the rest).
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text,
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_action ON audit_log (action, at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
