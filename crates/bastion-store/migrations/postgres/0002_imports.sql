-- Files loaded by `bastion import`, so that a re-run skips what already landed.
CREATE TABLE imports (
    sha256      TEXT PRIMARY KEY,
    name        TEXT    NOT NULL,
    resources   BIGINT NOT NULL,
    imported_at BIGINT NOT NULL
);
