CREATE TABLE odk_xforms_old (
    form_id TEXT NOT NULL,
    version TEXT NOT NULL,
    odk_version TEXT NOT NULL,
    key_id TEXT NOT NULL REFERENCES keys (kid),
    xml TEXT NOT NULL,
    md5 TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (form_id, odk_version),
    UNIQUE (form_id, version, key_id),
    FOREIGN KEY (form_id, version) REFERENCES form_versions (form_id, version)
);
INSERT INTO odk_xforms_old (form_id, version, odk_version, key_id, xml, md5, created_at)
    SELECT form_id, version, odk_version, key_id, xml, md5, created_at FROM odk_xforms
    WHERE generator = 1;
DROP TABLE odk_xforms;
ALTER TABLE odk_xforms_old RENAME TO odk_xforms;
