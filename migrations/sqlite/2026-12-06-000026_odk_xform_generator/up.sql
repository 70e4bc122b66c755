-- Which generation of the XForm writer made each stored XForm (#17 item 3:
-- entities changed what a form about a case holds). A version whose stored
-- XForm came from an older writer gets a new row with a new odk_version
-- suffix ("2021.1.1~k2"), unless the new writer's bytes are the same; the
-- old row stays, so a phone still holding it can send it. `case_list`: the
-- XForm reads the phone's case list (cases.csv, ODK Entities), so formList
-- gives it a manifest without reading its bytes. SQLite cannot
-- change a UNIQUE constraint in place: the table is copied.
CREATE TABLE odk_xforms_new (
    form_id TEXT NOT NULL,
    version TEXT NOT NULL,
    odk_version TEXT NOT NULL,
    key_id TEXT NOT NULL REFERENCES keys (kid),
    xml TEXT NOT NULL,
    md5 TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    generator INTEGER NOT NULL DEFAULT 1,
    case_list BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (form_id, odk_version),
    UNIQUE (form_id, version, key_id, generator),
    FOREIGN KEY (form_id, version) REFERENCES form_versions (form_id, version)
);
INSERT INTO odk_xforms_new (form_id, version, odk_version, key_id, xml, md5, created_at, generator)
    SELECT form_id, version, odk_version, key_id, xml, md5, created_at, 1 FROM odk_xforms;
DROP TABLE odk_xforms;
ALTER TABLE odk_xforms_new RENAME TO odk_xforms;
