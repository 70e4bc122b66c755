-- Exports (#19 item 3): a submission's repeat groups kept beside it, so the
-- .zip export writes each repeat group's file from one range of this table
-- instead of reading every envelope again for every group (a random page
-- read and its decryption per submission and group: referrals lie one to a
-- page among the other forms). Only the answers a repeat file reads: each
-- repeat group's subtree and the form's event time, at their places
-- (`kept`, one a line); an export needing another place reads the
-- envelope. Keyed like the export pages; WITHOUT ROWID, so the rows sit in
-- that order (about a kilobyte each, within a page's cell limit).
CREATE TABLE submission_repeats (
    form_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    instance_id TEXT NOT NULL REFERENCES submissions (instance_id),
    kept TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (form_id, received_at, instance_id)
) WITHOUT ROWID;
-- The submissions stored before are filled once by the server at start
-- (`submissions::repeats::backfill`, which removes this counter); until
-- then the export reads their envelopes, as before.
INSERT INTO counters (name, value) VALUES ('submission_repeats_backfill', 0);
