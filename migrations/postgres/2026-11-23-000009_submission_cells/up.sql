-- Exports (#6): a submission's answers as the form export's cells (a JSON
-- array: the layout's tag, the event's local day, then one string per
-- column of its version), written at ingest so an export of a million
-- rows copies strings instead of parsing a million envelopes. A table of
-- its own, narrow: read beside `submissions` without walking past each
-- row's JWE and envelope. No row for submissions stored before: the
-- export reads their envelope instead.
CREATE TABLE submission_cells (
    instance_id TEXT PRIMARY KEY NOT NULL REFERENCES submissions (instance_id),
    cells TEXT NOT NULL
);
