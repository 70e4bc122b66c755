DROP INDEX cases_programme_number;
DROP INDEX children_site_name;
CREATE INDEX children_site_name ON children (site_id, name_key);
