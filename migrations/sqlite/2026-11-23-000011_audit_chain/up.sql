-- Audit trail (#7): each row is chained to the one before it by a SHA-256
-- hash over its content and the previous hash, so an edited, deleted or
-- inserted row breaks the chain (`casesync audit verify`). `seq` is the
-- position in the chain, NULL until sealed: rows written before this
-- migration are sealed at the next start. `audit_head` holds the last seq
-- and hash, so deleting rows at the tail is detected too.
ALTER TABLE audit_log ADD COLUMN seq BIGINT;
-- The actor's sites when it acted (space-separated ids).
ALTER TABLE audit_log ADD COLUMN actor_sites TEXT;
-- A stated purpose (identifying exports, break-glass reads).
ALTER TABLE audit_log ADD COLUMN purpose TEXT;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_log_seq ON audit_log (seq);
-- The filters of GET /audit, newest first.
CREATE INDEX audit_log_action_seq ON audit_log (action, seq);
CREATE INDEX audit_log_actor_seq ON audit_log (actor_id, seq);
CREATE INDEX audit_log_object_seq ON audit_log (object_type, object_id, seq);

CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
-- The empty chain; the first row links to 64 zeros.
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
