DELETE FROM odk_xforms WHERE generator <> 1;
ALTER TABLE odk_xforms DROP CONSTRAINT odk_xforms_form_id_version_key_id_generator_key;
ALTER TABLE odk_xforms ADD CONSTRAINT odk_xforms_form_id_version_key_id_key
    UNIQUE (form_id, version, key_id);
ALTER TABLE odk_xforms DROP COLUMN case_list;
ALTER TABLE odk_xforms DROP COLUMN generator;
