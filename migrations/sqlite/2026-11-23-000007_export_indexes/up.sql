-- Exports page through a form's submissions and a programme's cases in
-- arrival order; these indexes make each page a range read.
CREATE INDEX submissions_form_received ON submissions (form_id, received_at, instance_id);
CREATE INDEX cases_programme_created ON cases (programme, created_at, id);
