-- A follow-up may arrive before the form that opened its case (#15 item 2):
-- it is stored and held, naming the case it is about in pending_case_id
-- (case_id references cases and stays empty until the case exists), with
-- the timeline event it will add (name, occurred_at, facts as JSON), read
-- from its form when it was received. When the case opens, the held forms
-- join it (case_id set, pending_case_id kept as the record of the wait) or
-- are refused (status refused).
ALTER TABLE submissions ADD COLUMN pending_case_id TEXT;
ALTER TABLE submissions ADD COLUMN pending_event TEXT;
CREATE INDEX submissions_pending_case ON submissions (pending_case_id);
