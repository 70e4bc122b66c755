-- Exports (#6): a submission's answers as the form export's cells (a JSON
-- array: the layout's tag, the event's local day, then one string per
-- column of its version), written at ingest so an export of a million
-- rows copies strings instead of parsing a million envelopes. NULL for
-- submissions stored before: the export reads their payload instead.
ALTER TABLE submissions ADD COLUMN cells TEXT;
