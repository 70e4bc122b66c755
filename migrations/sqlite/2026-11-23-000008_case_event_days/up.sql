-- Indicators (#6): the days each event of a case happened, written by the
-- fold beside the case's facts ({"event": ["2026-01-05", …]}), so a report
-- over 100,000 cases reads one row per case instead of every event.
-- NULL for cases folded before this migration: the engine reads their
-- events instead.
ALTER TABLE cases ADD COLUMN event_days TEXT;
