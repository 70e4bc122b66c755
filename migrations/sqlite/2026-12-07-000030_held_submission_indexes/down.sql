DROP INDEX submissions_held_pending;
DROP INDEX submissions_held_quarantined;
DROP INDEX submissions_held_refused;
