-- Cases (the minimum ingest needs: who may submit for them; the case
-- timeline issue extends this table) and stored submissions.

CREATE TABLE cases (
    id TEXT PRIMARY KEY NOT NULL,
    programme TEXT NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites (id),
    assigned_to TEXT REFERENCES users (id),
    state TEXT NOT NULL,
    version BIGINT NOT NULL,
    opened_by_instance TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX cases_assigned ON cases (assigned_to);
CREATE INDEX cases_site ON cases (site_id);

-- The raw JWE exactly as received and the decrypted envelope, written in one
-- transaction. `content_sha256` (of the canonical envelope) tells a retry
-- (same content) from a conflict (same instance id, other content).
CREATE TABLE submissions (
    instance_id TEXT PRIMARY KEY NOT NULL,
    form_id TEXT NOT NULL,
    form_version TEXT NOT NULL,
    case_id TEXT REFERENCES cases (id),
    submitted_by TEXT NOT NULL REFERENCES users (id),
    device_id TEXT NOT NULL,
    started_at TIMESTAMP,
    completed_at TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL,
    kid TEXT NOT NULL,
    raw_jwe TEXT NOT NULL,
    payload TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    base_case_version BIGINT,
    supersedes TEXT,
    superseded_by TEXT,
    status TEXT NOT NULL
);
CREATE INDEX submissions_case ON submissions (case_id);
CREATE INDEX submissions_form ON submissions (form_id, form_version);
