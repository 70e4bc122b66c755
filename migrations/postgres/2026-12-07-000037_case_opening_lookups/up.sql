-- Two lookups that every case opening makes read a number of rows that
-- grew with the data (#19 item 1: ingest flat with size).
--
-- The similar-name lookup of duplicate proposals (`children::
-- propose_duplicates`) asks a site's children whose names share the first
-- two letters and whose sex is the new child's. With the index on
-- (site_id, name_key) alone, every child in that name range was read from
-- the table to test its sex: a thousand rows at 25,000 children a site
-- before twenty of the wanted sex were found. With sex in the index the
-- test is made on the index entry, and only the matches are read.
DROP INDEX children_site_name;
CREATE INDEX children_site_name ON children (site_id, name_key, sex);

-- A BT code must be new in its programme (`cases::number_taken`); the
-- only index by number was per site, so the check read every case of the
-- programme (at 24,000 BT cases, 43 forms/s instead of 700).
CREATE INDEX cases_programme_number ON cases (programme, number);
