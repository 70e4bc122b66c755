-- The possible duplicates naming a child as the earlier one of the pair
-- (`cases::children::candidates_of_child`, the case page; linking a
-- pair settles the others naming the child): by this index, not by
-- walking every open pair of the site. The pairs naming it as the later
-- one are found by the (child_id, other_child_id) key.
CREATE INDEX duplicate_candidates_other ON duplicate_candidates (other_child_id);
