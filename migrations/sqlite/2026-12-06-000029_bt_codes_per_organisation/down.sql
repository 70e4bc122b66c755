ALTER TABLE users DROP COLUMN initials;
