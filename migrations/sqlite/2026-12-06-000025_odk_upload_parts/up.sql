-- ODK Collect's split uploads (#17 item 2), owned by ingest::odk: Collect
-- sends a form whose files pass X-OpenRosa-Accept-Content-Length over
-- several POSTs, each with the same manifest and the next files. The parts
-- wait here, as the phone encrypted them (base64), until every file the
-- manifest names has arrived; then the whole is decrypted, its signature
-- checked and stored as one submission, and these rows are deleted.
CREATE TABLE odk_upload_parts (
    -- The manifest's instanceID, as the phone wrote it (uuid:…).
    instance_id TEXT NOT NULL,
    -- The part's name: a file the manifest names, or xml_submission_file.
    name TEXT NOT NULL,
    submitted_by TEXT NOT NULL REFERENCES users (id),
    content TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (instance_id, name)
);
