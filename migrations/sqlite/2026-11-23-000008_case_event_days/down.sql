ALTER TABLE cases DROP COLUMN event_days;
