ALTER TABLE submissions DROP COLUMN problems;
