-- Exports page through a form's submissions and a programme's cases in
-- arrival order; possible duplicates are looked up by name and by birth
-- date at a site: these indexes make each a range read.
CREATE INDEX submissions_form_received ON submissions (form_id, received_at, instance_id);
CREATE INDEX cases_programme_created ON cases (programme, created_at, id);
CREATE INDEX children_site_name ON children (site_id, name_key);
CREATE INDEX children_site_birth ON children (site_id, date_of_birth);
