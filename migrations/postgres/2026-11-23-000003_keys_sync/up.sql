-- Programme key pairs (private parts sealed under the KEK) and the sync
-- change log that phones follow with an opaque cursor.

CREATE TABLE keys (
    kid TEXT PRIMARY KEY NOT NULL,
    programme TEXT NOT NULL,
    bits INTEGER NOT NULL,
    public_jwk TEXT NOT NULL,
    sealed_private TEXT NOT NULL,
    current BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    retired_at TIMESTAMP
);
CREATE INDEX keys_programme ON keys (programme, current);

-- `seq` comes from the `counters` row `sync`, incremented inside the writing
-- transaction: the row lock makes changes commit in sequence order, so a
-- cursor never skips a change that commits late.
CREATE TABLE sync_changes (
    seq BIGINT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    user_id TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX sync_changes_user ON sync_changes (user_id, seq);

CREATE TABLE counters (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('sync', 0);
