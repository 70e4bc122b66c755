-- Exports (#6): each submission keeps its case's site and number beside it,
-- so a form export pages through one index instead of looking up every
-- row's case by a random id (the floor of the export's speed at a million
-- cases). A case's site never changes; its number changes on readmission
-- and a submission's case on a merge, and both update these copies in the
-- same transaction (cases::children).
ALTER TABLE submissions ADD COLUMN site_id TEXT;
ALTER TABLE submissions ADD COLUMN case_number TEXT;
UPDATE submissions
SET site_id = cases.site_id, case_number = cases.number
FROM cases
WHERE cases.id = submissions.case_id;
DROP INDEX submissions_export;
CREATE INDEX submissions_export ON submissions (
    form_id, received_at, instance_id, superseded_by, form_version, site_id,
    case_number, case_id, submitted_by, device_id, started_at, completed_at
);
