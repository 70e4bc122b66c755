ALTER TABLE submissions DROP COLUMN cells;
