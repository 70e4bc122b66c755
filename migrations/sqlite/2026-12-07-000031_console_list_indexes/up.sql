-- Console pages at size (#18: < 100 ms at 100,000 cases). Each list walks
-- an index in the order it shows and stops at its page, instead of reading
-- and sorting every match.
--
-- Each index is paid for by every submission: a commit writes each index
-- leaf it touches whole (16 KiB, encrypted). A random key within a group of
-- equal values (a case id after a due time many cases share) touches a new
-- leaf per row, so no index here ends in a phone-made id after a column
-- with ties: equal due times stay in insertion order and the query sorts
-- that run alone. Measured on ingest (bytes written per referral, empty
-- database): the first version of this file +180 KiB (+65 %), this one
-- +40 KiB; CPU per referral +8 % (docs/console.md, "What the indexes cost").

-- The case list (`cases::views::list`) asks one site at a time: oldest or
-- newest first, or by the next deadline; a field worker's own cases (or a
-- coordinator's filter by worker) by assignee and site. The list's filter
-- columns come after the order's, so a filter (a state, a worker, overdue,
-- open) is tested on the index entry and only the rows shown are read.
-- They replace the one-column indexes on site and assignee, their prefixes.
DROP INDEX cases_site;
DROP INDEX cases_assigned;
CREATE INDEX cases_site_created ON cases
    (site_id, created_at, id, state, assigned_to, next_due_at, closed_at, merged_into);
CREATE INDEX cases_site_due ON cases
    (site_id, next_due_at, state, assigned_to, closed_at, merged_into);
CREATE INDEX cases_assignee_created ON cases
    (assigned_to, site_id, created_at, id, state, next_due_at, closed_at, merged_into);
CREATE INDEX cases_assignee_due ON cases
    (assigned_to, site_id, next_due_at, state, closed_at, merged_into);

-- Today (`cases::views::due_by_rule`): per site and rule, the count of
-- overdue and due-soon deadlines from the index alone, and the most urgent
-- few (soon_at and assigned_to ride along for the filters).
CREATE INDEX case_deadlines_site_rule ON case_deadlines
    (site_id, outcome, rule_id, due_at, soon_at, assigned_to);

-- Today's queues: the likeliest possible duplicates and the oldest open
-- conflicts of a site, the first few (`cases::children::candidates`,
-- `cases::actions::conflicts_for`), from the index in order. Each replaces
-- the (site_id, status) index that is its prefix.
DROP INDEX duplicate_candidates_site;
CREATE INDEX duplicate_candidates_site_score ON duplicate_candidates
    (site_id, status, score DESC, created_at);
DROP INDEX conflicts_site;
CREATE INDEX conflicts_site_created ON conflicts (site_id, status, created_at);

-- The audit log by date range (`audit::query`): newest first by time,
-- then by position, from the index.
DROP INDEX audit_log_occurred;
CREATE INDEX audit_log_occurred_seq ON audit_log (occurred_at, seq);
