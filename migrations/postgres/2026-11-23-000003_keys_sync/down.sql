DROP TABLE counters;
DROP TABLE sync_changes;
DROP TABLE keys;
