-- Break-glass stays exceptional (#14, item 13): a grant made within 24
-- hours of an earlier one by the same coordinator for the same case is a
-- renewal, flagged for the case's reviewers.
ALTER TABLE break_glass_grants ADD COLUMN renewal BOOLEAN NOT NULL DEFAULT FALSE;
