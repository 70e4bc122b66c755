-- Exports (#14, data at rest): the de-identified records move to a table
-- of their own. A de-identified export read whole rows of
-- submission_cells, each holding the identifying record too (about 740
-- bytes beside the 210 it writes); under SQLCipher every page read is
-- decrypted and its HMAC checked, so it paid for both. WITHOUT ROWID: the
-- rows are small, so the key's own tree holds them in export order and a
-- page of the export is one range of leaves.
CREATE TABLE submission_cells_deidentified (
    form_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    instance_id TEXT NOT NULL REFERENCES submissions (instance_id),
    layout TEXT NOT NULL,
    -- The local day of the form's event (ages are counted to it).
    event_day TEXT NOT NULL,
    deidentified TEXT NOT NULL,
    PRIMARY KEY (form_id, received_at, instance_id)
) WITHOUT ROWID;
INSERT INTO submission_cells_deidentified
SELECT form_id, received_at, instance_id, layout, event_day, deidentified
FROM submission_cells;
ALTER TABLE submission_cells DROP COLUMN deidentified;
