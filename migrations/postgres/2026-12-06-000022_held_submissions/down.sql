DROP INDEX submissions_pending_case;
ALTER TABLE submissions DROP COLUMN pending_event;
ALTER TABLE submissions DROP COLUMN pending_case_id;
