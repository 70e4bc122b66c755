DROP INDEX children_site_birth;
DROP INDEX children_site_name;
DROP INDEX cases_programme_created;
DROP INDEX submissions_form_received;
