-- Form registry: forms, their frozen published versions, one draft each.

CREATE TABLE forms (
    id TEXT PRIMARY KEY NOT NULL,
    programme TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- A published version is never updated except to retire it: `document`
-- (the bundled, self-contained schema) and `sha256` are frozen.
CREATE TABLE form_versions (
    form_id TEXT NOT NULL REFERENCES forms (id),
    version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('published', 'retired')),
    document TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    published_at TIMESTAMP NOT NULL,
    published_by TEXT REFERENCES users (id),
    retired_at TIMESTAMP,
    PRIMARY KEY (form_id, version)
);

CREATE TABLE form_drafts (
    form_id TEXT PRIMARY KEY NOT NULL,
    version TEXT NOT NULL,
    source TEXT NOT NULL,
    document TEXT NOT NULL,
    uploaded_by TEXT REFERENCES users (id),
    uploaded_at TIMESTAMP NOT NULL
);
