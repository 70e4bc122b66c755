ALTER TABLE audit_head DROP COLUMN key_id;
ALTER TABLE audit_head DROP COLUMN keyed_from;
ALTER TABLE audit_head DROP COLUMN chain_id;
