-- Dates without a time (#15 item 4): a deadline met by a date-only answer
-- is late by whole local days, and so is an open one whose limit counts
-- days (it ends with a local day). The fold writes this flag; existing rows
-- are filled from what they hold: met by an event answered with a date, or
-- due on the last second of a local day (an hour limit counted from a time
-- on the minute never is). Cases are
-- folded again, exactly, on their next event.
ALTER TABLE case_deadlines ADD COLUMN late_in_days BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE case_deadlines SET late_in_days = TRUE
WHERE (outcome = 'met' AND ended_by IN
        (SELECT id FROM case_events WHERE length(occurred_at) = 10))
   OR (outcome <> 'met' AND to_char(due_at, 'MI:SS') IN ('59:59', '29:59', '44:59'));
