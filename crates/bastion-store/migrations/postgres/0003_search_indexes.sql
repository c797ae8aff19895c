-- String, date and reference index rows of current versions.
CREATE TABLE idx_string (
    res_pk          BIGINT NOT NULL,
    res_type        TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    normalized      TEXT    NOT NULL,
    exact           TEXT    NOT NULL,
    compartment_key TEXT
);
CREATE INDEX idx_string_match ON idx_string (res_type, param, normalized);
CREATE INDEX idx_string_resource ON idx_string (res_pk);

CREATE TABLE idx_date (
    res_pk          BIGINT NOT NULL,
    res_type        TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    low             BIGINT NOT NULL,
    high            BIGINT NOT NULL,
    compartment_key TEXT
);
CREATE INDEX idx_date_match ON idx_date (res_type, param, low, high);
CREATE INDEX idx_date_resource ON idx_date (res_pk);

CREATE TABLE idx_reference (
    res_pk          BIGINT NOT NULL,
    res_type        TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    target_type     TEXT,
    target_id       TEXT,
    url             TEXT    NOT NULL,
    compartment_key TEXT
);
CREATE INDEX idx_reference_match ON idx_reference (res_type, param, target_id, target_type);
CREATE INDEX idx_reference_resource ON idx_reference (res_pk);
