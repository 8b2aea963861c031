-- A receipt that says the recipient opted out at the carrier (Twilio 21610) can arrive before
-- our write of the send result, and then waits unapplied. It remembers the opt-out, so that
-- the opt-out is done when the receipt is applied, as it is for a receipt that finds its
-- delivery at once.
ALTER TABLE delivery_receipts ADD COLUMN opted_out boolean NOT NULL DEFAULT false;
