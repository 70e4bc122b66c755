DROP TABLE odk_xforms;
