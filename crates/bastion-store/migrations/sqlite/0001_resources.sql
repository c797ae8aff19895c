-- Resources, their versions, patient compartments and the token index.
CREATE TABLE resources (
    pk              INTEGER PRIMARY KEY,
    res_type        TEXT    NOT NULL,
    res_id          TEXT    NOT NULL,
    version_id      INTEGER NOT NULL,
    last_updated    INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    compartment_key TEXT,
    UNIQUE (res_type, res_id)
);

CREATE TABLE resource_versions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    res_pk          INTEGER NOT NULL,
    res_type        TEXT    NOT NULL,
    res_id          TEXT    NOT NULL,
    version_id      INTEGER NOT NULL,
    last_updated    INTEGER NOT NULL,
    method          TEXT    NOT NULL,
    body            BLOB,
    compartments    TEXT    NOT NULL,
    compartment_key TEXT,
    UNIQUE (res_type, res_id, version_id)
);
CREATE INDEX resource_versions_type_seq ON resource_versions (res_type, seq);

CREATE TABLE compartments (
    patient_id TEXT    NOT NULL,
    res_pk     INTEGER NOT NULL,
    version_id INTEGER NOT NULL,
    PRIMARY KEY (res_pk, version_id, patient_id)
) WITHOUT ROWID;
CREATE INDEX compartments_patient ON compartments (patient_id, res_pk);

CREATE TABLE idx_token (
    res_pk          INTEGER NOT NULL,
    res_type        TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    system          TEXT,
    code            TEXT    NOT NULL,
    compartment_key TEXT
);
CREATE INDEX idx_token_match ON idx_token (res_type, param, code, system);
CREATE INDEX idx_token_resource ON idx_token (res_pk);
