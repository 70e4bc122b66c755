-- Case timelines (#5): children, case numbers, the events a case folds,
-- the deadlines the fold yields, conflicts, possible duplicate children and
-- the editable part of the programmes' calendars.

-- One row per child; identity (normalised name, date of birth, sex) only to
-- propose possible duplicates — lists and logs use case numbers.
CREATE TABLE children (
    id TEXT PRIMARY KEY NOT NULL,
    programme TEXT NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites (id),
    -- KZ: the number of the child's first admission; readmissions add .N
    root_number TEXT,
    admissions INTEGER NOT NULL DEFAULT 0,
    family_group_id TEXT,
    name_key TEXT,
    date_of_birth TEXT,
    sex TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX children_site ON children (site_id);
CREATE INDEX children_family ON children (family_group_id);

ALTER TABLE cases ADD COLUMN child_id TEXT REFERENCES children (id);
ALTER TABLE cases ADD COLUMN number TEXT;
ALTER TABLE cases ADD COLUMN admission INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN facts TEXT NOT NULL DEFAULT '{}';
ALTER TABLE cases ADD COLUMN opened_at TIMESTAMP;
ALTER TABLE cases ADD COLUMN closed_at TIMESTAMP;
ALTER TABLE cases ADD COLUMN next_due_at TIMESTAMP;
ALTER TABLE cases ADD COLUMN merged_into TEXT;
CREATE UNIQUE INDEX cases_site_number ON cases (site_id, number);
CREATE INDEX cases_child ON cases (child_id);

-- Allocated inside the opening transaction: the upsert locks the row, so
-- two servers on one database never hand out the same number.
CREATE TABLE case_number_counters (
    scope TEXT PRIMARY KEY NOT NULL,
    last_value BIGINT NOT NULL
);

-- What a case folds: one row per submission about it and per staff action.
-- `seq` is the case version the event made (arrival order, for conflicts);
-- the fold orders by `occurred_at`.
CREATE TABLE case_events (
    id TEXT PRIMARY KEY NOT NULL,
    case_id TEXT NOT NULL REFERENCES cases (id),
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    occurred_at_utc TIMESTAMP NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    recorded_by TEXT NOT NULL REFERENCES users (id),
    base_version BIGINT,
    facts TEXT NOT NULL,
    detail TEXT,
    superseded BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX case_events_case ON case_events (case_id, seq);

-- The fold's deadlines, rewritten whenever the case is folded again; site
-- and assignee copied so the morning list is one indexed query.
CREATE TABLE case_deadlines (
    case_id TEXT NOT NULL REFERENCES cases (id),
    rule_id TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    programme TEXT NOT NULL,
    site_id TEXT NOT NULL,
    assigned_to TEXT,
    started_at TIMESTAMP NOT NULL,
    due_at TIMESTAMP NOT NULL,
    soon_at TIMESTAMP NOT NULL,
    outcome TEXT NOT NULL,
    met_at TIMESTAMP,
    on_time BOOLEAN,
    ended_by TEXT,
    PRIMARY KEY (case_id, rule_id, occurrence)
);
CREATE INDEX case_deadlines_open ON case_deadlines (outcome, due_at);
CREATE INDEX case_deadlines_site ON case_deadlines (site_id, outcome, due_at);

-- A late submission that changed a fact someone else changed meanwhile.
CREATE TABLE conflicts (
    id TEXT PRIMARY KEY NOT NULL,
    case_id TEXT NOT NULL REFERENCES cases (id),
    site_id TEXT NOT NULL,
    fact TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES case_events (id),
    event_value TEXT NOT NULL,
    other_event_id TEXT NOT NULL REFERENCES case_events (id),
    other_value TEXT NOT NULL,
    applied_value TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    resolved_by TEXT REFERENCES users (id),
    resolved_at TIMESTAMP,
    resolution_event_id TEXT
);
CREATE INDEX conflicts_case ON conflicts (case_id);
CREATE INDEX conflicts_site ON conflicts (site_id, status);

CREATE TABLE duplicate_candidates (
    id TEXT PRIMARY KEY NOT NULL,
    child_id TEXT NOT NULL REFERENCES children (id),
    other_child_id TEXT NOT NULL REFERENCES children (id),
    site_id TEXT NOT NULL,
    reasons TEXT NOT NULL,
    score INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    decided_by TEXT REFERENCES users (id),
    decided_at TIMESTAMP,
    UNIQUE (child_id, other_child_id)
);
CREATE INDEX duplicate_candidates_site ON duplicate_candidates (site_id, status);

-- Holidays added, or shipped holidays made working days, by admins.
CREATE TABLE calendar_days (
    programme TEXT NOT NULL,
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    changed_by TEXT,
    changed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (programme, day)
);
