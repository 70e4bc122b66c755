-- How a case's deadlines stand (met on time, met late, missed, and the
-- due times of the open ones), written by the fold beside the case's
-- facts (`cases::timeline::DeadlineTally`): the case export reads it
-- with the case's row instead of looking up every case's deadlines
-- (#19 item 3). NULL for a case not folded since: the export then
-- counts that case's `case_deadlines` rows, as before.
ALTER TABLE cases ADD COLUMN deadline_tally TEXT;
