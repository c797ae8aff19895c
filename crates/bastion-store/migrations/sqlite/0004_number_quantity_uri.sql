-- Number, quantity and uri index rows of current versions.
CREATE TABLE idx_number (
    res_pk          INTEGER NOT NULL,
    res_type        TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    compartment_key TEXT
);
CREATE INDEX idx_number_match ON idx_number (res_type, param, value);
CREATE INDEX idx_number_resource ON idx_number (res_pk);

CREATE TABLE idx_quantity (
    res_pk          INTEGER NOT NULL,
    res_type        TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    system          TEXT,
    code            TEXT,
    unit            TEXT,
    compartment_key TEXT
);
CREATE INDEX idx_quantity_match ON idx_quantity (res_type, param, code, value);
CREATE INDEX idx_quantity_resource ON idx_quantity (res_pk);

CREATE TABLE idx_uri (
    res_pk          INTEGER NOT NULL,
    res_type        TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    compartment_key TEXT
);
CREATE INDEX idx_uri_match ON idx_uri (res_type, param, value);
CREATE INDEX idx_uri_resource ON idx_uri (res_pk);
