DROP INDEX cases_programme_created;
DROP INDEX submissions_form_received;
