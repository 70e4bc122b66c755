-- Two indexes of every deadline by due time went: each cost every stored
-- form about a page write (with SQLCipher, a page encrypted and signed),
-- measured as WAL frames per referral (#14, #19 item 1): of about 16 pages
-- a referral wrote, `case_deadlines_open` took 0.8 and `case_deadlines_site`
-- 1.0. Their one reader, the list of open deadlines (`GET /deadlines`,
-- `casesync cases overdue`), walks `case_deadlines_site_rule` per site and
-- rule instead, as Today does (`cases::views::due_in`). IF EXISTS: a
-- database a development build migrated as 000036 has them gone already.
DROP INDEX IF EXISTS case_deadlines_open;
DROP INDEX IF EXISTS case_deadlines_site;
