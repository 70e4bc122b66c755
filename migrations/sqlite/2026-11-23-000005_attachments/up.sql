-- Attachments a submission declares (name, type, size, sha256 of the
-- plaintext) are listed when the submission is stored; each arrives later as
-- its own JWE, kept as received (encrypted at rest) and opened on read.
CREATE TABLE attachments (
    instance_id TEXT NOT NULL REFERENCES submissions (instance_id),
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    kid TEXT,
    raw_jwe TEXT,
    received_at TIMESTAMP,
    PRIMARY KEY (instance_id, name)
);
