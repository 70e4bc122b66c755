-- Console pages at size (#18: < 100 ms at 100,000 cases). Each list walks
-- an index in the order it shows and stops at its page, instead of reading
-- and sorting every match.

-- The case list (`cases::views::list`) asks one site at a time: oldest or
-- newest first, or by the next deadline; a field worker's own cases (or a
-- coordinator's filter by worker) by assignee and site. The list's filter
-- columns come after the order's, so SQLite tests a filter (a state, a
-- worker, overdue, open) on the index entry and reads only the rows it
-- shows: a filter that matches none of a site's 22,000 cases took 680 ms
-- reading each row, 4 ms from the index. They replace the one-column
-- indexes on site and assignee, which are their prefixes.
DROP INDEX cases_site;
DROP INDEX cases_assigned;
CREATE INDEX cases_site_created ON cases
    (site_id, created_at, id, state, assigned_to, next_due_at, closed_at, merged_into);
CREATE INDEX cases_site_due ON cases
    (site_id, next_due_at, id, state, assigned_to, closed_at, merged_into);
CREATE INDEX cases_assignee_created ON cases
    (assigned_to, site_id, created_at, id, state, next_due_at, closed_at, merged_into);
CREATE INDEX cases_assignee_due ON cases
    (assigned_to, site_id, next_due_at, id, state, closed_at, merged_into);

-- Today (`cases::views::due_by_rule`): per site and rule, the count of
-- overdue and due-soon deadlines and the most urgent few, read from the
-- index alone (soon_at and assigned_to ride along for the filters).
CREATE INDEX case_deadlines_site_rule ON case_deadlines
    (site_id, outcome, rule_id, due_at, case_id, soon_at, assigned_to);

-- Today's queues: the likeliest possible duplicates and the oldest open
-- conflicts of a site, the first few (`cases::children::candidates`,
-- `cases::actions::conflicts_for`), from the index in order.
CREATE INDEX duplicate_candidates_site_score ON duplicate_candidates
    (site_id, status, score DESC, created_at);
CREATE INDEX conflicts_site_created ON conflicts (site_id, status, created_at);

-- The audit log by date range (`audit::query`): newest first by time,
-- then by position, from the index.
DROP INDEX audit_log_occurred;
CREATE INDEX audit_log_occurred_seq ON audit_log (occurred_at, seq);
