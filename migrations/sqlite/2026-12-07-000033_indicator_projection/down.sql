DROP INDEX cases_programme_created;
CREATE INDEX cases_programme_created ON cases (programme, created_at, id);
DROP TABLE indicator_cases;
