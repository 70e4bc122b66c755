-- Access requests (#7, KZ 10.5 A2/A3): a child, parent or legal
-- representative asks for the case file; a coordinator (the Manager)
-- approves it with redactions or refuses it, giving the best-interests
-- reasoning; an approved request yields a redacted copy on demand. The copy
-- itself is never stored: each production is in the audit log.
CREATE TABLE access_requests (
    id TEXT PRIMARY KEY NOT NULL,
    case_id TEXT NOT NULL REFERENCES cases (id),
    -- child, parent or legal_representative
    requester TEXT NOT NULL,
    received_on DATE NOT NULL,
    recorded_by TEXT NOT NULL REFERENCES users (id),
    recorded_at TIMESTAMP NOT NULL,
    -- pending, approved or refused
    status TEXT NOT NULL,
    reviewed_by TEXT REFERENCES users (id),
    reviewed_at TIMESTAMP,
    -- required to approve a parent's or legal representative's request,
    -- and for any refusal
    best_interests_reasoning TEXT,
    -- JSON list of {instance_id, pointer, reason}
    redactions TEXT NOT NULL DEFAULT '[]',
    copy_produced_at TIMESTAMP
);
CREATE INDEX access_requests_case ON access_requests (case_id, recorded_at);
