-- ODK forms held for a coordinator (#17): a decryptable, well-formed form
-- from ODK Collect whose answers the form version refuses cannot be fixed
-- on the phone (an encrypted finalised form is read-only there), so it is
-- stored like any submission but not processed: status quarantined (later
-- dismissed), with what the validator found — JSON pointers and messages,
-- never a submitted value — as a JSON array here. Owned by submissions;
-- written by ingest.
ALTER TABLE submissions ADD COLUMN problems TEXT;
