-- The XForm of each published form version, per programme key (#17 item 1),
-- owned by the odk module. Made at publish (and at start for shipped
-- versions) and never made again for the same version and key: Collect
-- checks the md5 of the exact bytes. A key rotation makes a new row whose
-- odk_version carries a suffix ("2021.1.1~k2"), which maps back to the
-- same JSON-Schema version.
CREATE TABLE odk_xforms (
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
