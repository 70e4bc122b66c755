ALTER TABLE audit_log DROP COLUMN token_created_by;
