-- Exports (#6): a submission's answers kept as ready CSV, so a form export
-- of its version copies one string per row instead of decoding cells and
-- encoding them again (the JSON array of 000009 cost as much per row as
-- everything else the export does). Two records per submission: the
-- identifying one, and the de-identified one (direct identifiers dropped,
-- dates of birth as ages at the event, dates as months). An export whose
-- columns differ from the version's (a union of versions) decodes the
-- identifying record and maps it; `layout` tags the column rules the
-- records were written with, and rows of another layout (or no row, as
-- for submissions stored before 000009) are read from their envelope.
-- The rows of 000009 are dropped: their envelopes remain, and the export
-- reads those instead.
DROP TABLE submission_cells;
CREATE TABLE submission_cells (
    form_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    instance_id TEXT NOT NULL REFERENCES submissions (instance_id),
    layout TEXT NOT NULL,
    -- The local day of the form's event (ages are counted to it).
    event_day TEXT NOT NULL,
    identifying TEXT NOT NULL,
    deidentified TEXT NOT NULL,
    PRIMARY KEY (form_id, received_at, instance_id)
);
