-- What the indicator engine reads of a case (#19 item 4): only the facts,
-- event days and event records the programme's indicator definitions use,
-- and the deadlines the timeliness indicators count (outcome not "not
-- applicable"), written by the fold with the case. A report of 100,000 cases reads this
-- (a few hundred bytes a case) instead of every case's whole facts.
-- `spec` names the definitions it was made from: rows of an older spec
-- are made again at start (the server fills the table; SQL cannot read
-- programme.json).
-- A rowid table: rows lie in the order cases were first folded (made), the
-- order a report reads them in, so each page is read once.
CREATE TABLE indicator_cases (
    id INTEGER PRIMARY KEY NOT NULL,
    case_id TEXT NOT NULL UNIQUE REFERENCES cases (id),
    spec TEXT NOT NULL,
    closed_at TIMESTAMP,
    facts TEXT NOT NULL,
    event_days TEXT NOT NULL,
    records TEXT,
    deadlines TEXT NOT NULL
);

-- A report pages through a programme's cases in arrival order: with the
-- columns it reads of the case in the index, it never reads the case rows
-- (each a page's worth of facts) at all.
DROP INDEX cases_programme_created;
CREATE INDEX cases_programme_created ON cases (programme, created_at, id, site_id, merged_into, opened_at, child_id, admission);
