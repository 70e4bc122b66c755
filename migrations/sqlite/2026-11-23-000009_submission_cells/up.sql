-- Exports (#6): a submission's answers as the form export's cells (a JSON
-- array: the layout's tag, the event's local day, then one string per
-- column of its version), written at ingest so an export of a million
-- rows copies strings instead of parsing a million envelopes. A table of
-- its own, narrow: read beside `submissions` without walking past each
-- row's JWE and envelope. No row for submissions stored before: the
-- export reads their envelope instead.
-- Keyed like the export pages (form, arrival, instance), so a page's
-- cells are one range read, in order, whatever the instance ids look like.
CREATE TABLE submission_cells (
    form_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    instance_id TEXT NOT NULL REFERENCES submissions (instance_id),
    cells TEXT NOT NULL,
    PRIMARY KEY (form_id, received_at, instance_id)
) WITHOUT ROWID;

-- The form export pages through a form's submissions by arrival and reads
-- only these columns: with all of them in the index it never visits the
-- table's wide rows (each holds a JWE and an envelope).
DROP INDEX submissions_form_received;
CREATE INDEX submissions_export ON submissions (
    form_id, received_at, instance_id, superseded_by, form_version, case_id,
    submitted_by, device_id, started_at, completed_at
);
