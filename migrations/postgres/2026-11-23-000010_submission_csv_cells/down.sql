DROP TABLE submission_cells;
CREATE TABLE submission_cells (
    form_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    instance_id TEXT NOT NULL REFERENCES submissions (instance_id),
    cells TEXT NOT NULL,
    PRIMARY KEY (form_id, received_at, instance_id)
);
