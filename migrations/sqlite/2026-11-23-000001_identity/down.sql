DROP TABLE audit_log;
DROP TABLE login_throttle;
DROP TABLE tokens;
DROP TABLE user_sites;
DROP TABLE users;
DROP TABLE sites;
