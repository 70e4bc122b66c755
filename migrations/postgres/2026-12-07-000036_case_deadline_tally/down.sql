ALTER TABLE cases DROP COLUMN deadline_tally;
