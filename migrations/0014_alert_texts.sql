-- An alert may carry its text in several languages: each subscriber gets the one in their
-- language, else alerts.message (Danish unless the caller chose otherwise). multilingual says
-- whether there are any, so that a claim looks alert_texts up only for those alerts.
CREATE TABLE alert_texts (
    alert_id  bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    language  text NOT NULL,
    message   text NOT NULL,
    PRIMARY KEY (alert_id, language)
);
ALTER TABLE alerts ADD COLUMN multilingual boolean NOT NULL DEFAULT false;
