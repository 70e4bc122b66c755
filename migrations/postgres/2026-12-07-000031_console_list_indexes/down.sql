DROP INDEX audit_log_occurred_seq;
CREATE INDEX audit_log_occurred ON audit_log (occurred_at);
DROP INDEX case_deadlines_site_rule;
DROP INDEX cases_assignee_due;
DROP INDEX cases_assignee_created;
DROP INDEX cases_site_due;
DROP INDEX cases_site_created;
CREATE INDEX cases_assigned ON cases (assigned_to);
CREATE INDEX cases_site ON cases (site_id);
