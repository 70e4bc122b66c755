ALTER TABLE submission_cells ADD COLUMN deidentified TEXT NOT NULL DEFAULT '';
UPDATE submission_cells SET deidentified = (
    SELECT d.deidentified FROM submission_cells_deidentified d
    WHERE d.form_id = submission_cells.form_id
      AND d.received_at = submission_cells.received_at
      AND d.instance_id = submission_cells.instance_id
);
DROP TABLE submission_cells_deidentified;
