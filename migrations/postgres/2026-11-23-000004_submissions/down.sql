DROP TABLE submissions;
DROP TABLE cases;
