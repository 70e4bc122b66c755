-- Keyed audit chain (#14 item 14): from `keyed_from` on, a row's hash is an
-- HMAC-SHA256 under the chain's key, which is sealed under the
-- key-encryption key in data/audit.key and never stored here. These columns
-- only say which chain and key that is (`key_id` is a fingerprint, not the
-- key), so that a server given another audit.key refuses to write; the
-- truth for verification is the sealed file.
ALTER TABLE audit_head ADD COLUMN chain_id TEXT;
ALTER TABLE audit_head ADD COLUMN keyed_from BIGINT;
ALTER TABLE audit_head ADD COLUMN key_id TEXT;
