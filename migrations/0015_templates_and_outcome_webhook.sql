-- Message templates (ingest/templates.py): a name, and its versions, each with one text per
-- language ({language: text}) and the longest value of each placeholder it was checked with.
-- Storing a name again adds its next version (templates.version is the current one); versions
-- are kept, and an alert keeps the texts it was rendered to whatever comes later.
CREATE TABLE templates (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE template_versions (
    template_id    bigint NOT NULL REFERENCES templates (id),
    version        integer NOT NULL,
    texts          jsonb NOT NULL,
    value_lengths  jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text,
    PRIMARY KEY (template_id, version)
);
