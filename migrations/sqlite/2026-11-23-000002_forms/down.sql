DROP TABLE form_drafts;
DROP TABLE form_versions;
DROP TABLE forms;
