ALTER TABLE case_deadlines DROP COLUMN late_in_days;
