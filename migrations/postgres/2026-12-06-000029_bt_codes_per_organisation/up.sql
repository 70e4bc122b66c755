-- BT case codes (#20 item 12). The SOP's initials segment (§10.2, "Initials
-- of case manager opening the case") cannot always be derived from a
-- display name (a name in Dzongkha script): the two or three letters an
-- admin sets for the worker. Owned by auth::users; read when a
-- registration opens a case (cases::numbers). The code's NNN now counts per
-- organisation code and month (new counter scopes, no change of table).
ALTER TABLE users ADD COLUMN initials TEXT;
