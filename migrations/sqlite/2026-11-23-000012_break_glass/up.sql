-- Break-glass (#7): a coordinator reads a case of a site they do not
-- coordinate, for a stated reason and a limited time. Grants are never
-- deleted: they are the record of who looked outside their sites and why.
CREATE TABLE break_glass_grants (
    id TEXT PRIMARY KEY NOT NULL,
    case_id TEXT NOT NULL REFERENCES cases (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    reason TEXT NOT NULL,
    granted_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX break_glass_grants_user_case ON break_glass_grants (user_id, case_id, expires_at);
CREATE INDEX break_glass_grants_case ON break_glass_grants (case_id);
