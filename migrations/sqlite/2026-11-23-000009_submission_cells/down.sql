DROP INDEX submissions_export;
CREATE INDEX submissions_form_received ON submissions (form_id, received_at, instance_id);
DROP TABLE submission_cells;
