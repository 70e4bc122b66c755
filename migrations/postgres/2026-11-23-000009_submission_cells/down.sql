DROP TABLE submission_cells;
