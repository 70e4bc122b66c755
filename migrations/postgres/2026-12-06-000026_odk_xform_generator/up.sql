-- Which generation of the XForm writer made each stored XForm (#17 item 3:
-- entities changed what a form about a case holds). A version whose stored
-- XForm came from an older writer gets a new row with a new odk_version
-- suffix ("2021.1.1~k2"), unless the new writer's bytes are the same; the
-- old row stays, so a phone still holding it can send it. `case_list`: the
-- XForm reads the phone's case list (cases.csv, ODK Entities), so formList
-- gives it a manifest without reading its bytes.
ALTER TABLE odk_xforms ADD COLUMN generator INTEGER NOT NULL DEFAULT 1;
ALTER TABLE odk_xforms ADD COLUMN case_list BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE odk_xforms DROP CONSTRAINT odk_xforms_form_id_version_key_id_key;
ALTER TABLE odk_xforms ADD CONSTRAINT odk_xforms_form_id_version_key_id_generator_key
    UNIQUE (form_id, version, key_id, generator);
