-- Consent records (KZ 10.4, BT D-01…D-03): one signatory's consent or
-- assent to some uses of a case's data. Never deleted; a withdrawal is
-- dated and honoured from then on.
CREATE TABLE consents (
    id TEXT PRIMARY KEY NOT NULL,
    case_id TEXT NOT NULL REFERENCES cases (id),
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    medium TEXT NOT NULL,
    -- Space-separated: participate collect_store aggregate share_providers disclose.
    scopes TEXT NOT NULL,
    recipient TEXT,
    given_on DATE NOT NULL,
    instance_id TEXT REFERENCES submissions (instance_id),
    recorded_by TEXT NOT NULL REFERENCES users (id),
    recorded_at TIMESTAMP NOT NULL,
    withdrawn_on DATE,
    withdrawn_at TIMESTAMP,
    withdrawn_by TEXT REFERENCES users (id),
    withdrawal_reason TEXT
);
CREATE INDEX consents_case ON consents (case_id, given_on);

-- The disclosure log (KZ P1, P3, P4; BT Annex E): every identifying export
-- or share, with its legal basis, what, to whom, why and how.
CREATE TABLE disclosures (
    id TEXT PRIMARY KEY NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    actor_id TEXT REFERENCES users (id),
    programme TEXT NOT NULL,
    case_id TEXT REFERENCES cases (id),
    legal_basis TEXT NOT NULL,
    legal_provision TEXT,
    -- Space-separated consent ids, for a disclosure by consent.
    consent_ids TEXT,
    recipient TEXT NOT NULL,
    purpose TEXT NOT NULL,
    method TEXT NOT NULL,
    what TEXT NOT NULL
);
CREATE INDEX disclosures_case ON disclosures (case_id);
CREATE INDEX disclosures_occurred ON disclosures (occurred_at);

-- The sites whose data a disclosure carried (an export may span several).
CREATE TABLE disclosure_sites (
    disclosure_id TEXT NOT NULL REFERENCES disclosures (id),
    site_id TEXT NOT NULL REFERENCES sites (id),
    PRIMARY KEY (disclosure_id, site_id)
);
CREATE INDEX disclosure_sites_site ON disclosure_sites (site_id);
