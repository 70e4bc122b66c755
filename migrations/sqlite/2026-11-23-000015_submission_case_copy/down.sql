DROP INDEX submissions_export;
CREATE INDEX submissions_export ON submissions (
    form_id, received_at, instance_id, superseded_by, form_version, case_id,
    submitted_by, device_id, started_at, completed_at
);
ALTER TABLE submissions DROP COLUMN case_number;
ALTER TABLE submissions DROP COLUMN site_id;
