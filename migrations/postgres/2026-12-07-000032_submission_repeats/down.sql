DELETE FROM counters WHERE name = 'submission_repeats_backfill';
DROP TABLE submission_repeats;
