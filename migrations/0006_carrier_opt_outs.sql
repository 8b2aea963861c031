-- Carrier-level opt-outs: a recipient who answered STOP to one of our senders (Twilio error
-- 21610, on submission or in a status callback) is opted out of every alert, through the
-- existing status 'opted_out' (the fan-out leaves such subscribers out and a claim cancels their
-- queued deliveries). When and why are kept for operators; both stay NULL for subscribers who
-- were never opted out this way.
ALTER TABLE subscribers
    ADD COLUMN opted_out_at timestamptz,
    ADD COLUMN opt_out_reason text;
