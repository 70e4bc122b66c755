CREATE INDEX case_deadlines_open ON case_deadlines (outcome, due_at);
CREATE INDEX case_deadlines_site ON case_deadlines (site_id, outcome, due_at);
