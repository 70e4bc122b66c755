-- The held list (`ingest::held::list`, on every coordinator's Today page)
-- reads the few submissions that are not settled: pending their case,
-- quarantined, refused. Without these it read every submission of the
-- database (36 s at 1.2 M submissions). Partial indexes hold only those
-- rows, so storing an ordinary submission writes none of them.
CREATE INDEX submissions_held_pending ON submissions (submitted_by) WHERE status = 'pending_case';
CREATE INDEX submissions_held_quarantined ON submissions (submitted_by) WHERE status = 'quarantined';
CREATE INDEX submissions_held_refused ON submissions (submitted_by) WHERE status = 'refused';
