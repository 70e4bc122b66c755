-- Token scope (#14.4): a request made with a device token is audited with
-- the token's maker beside the user it acts as, so every row made with a
-- token a coordinator or admin minted names them. Hashed into the chain
-- when set (rows without it hash as before).
ALTER TABLE audit_log ADD COLUMN token_created_by TEXT;
