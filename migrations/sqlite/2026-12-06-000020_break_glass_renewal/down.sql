ALTER TABLE break_glass_grants DROP COLUMN renewal;
