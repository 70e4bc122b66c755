DROP TABLE odk_upload_parts;
