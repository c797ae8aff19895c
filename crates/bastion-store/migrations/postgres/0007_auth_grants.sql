-- Short-lived authorization state every node must share: pending authorization requests
-- (between the login and the consent page), authorization codes and EHR launch contexts.
-- `id` is the SHA-256 of the value handed to the browser or client, never the value itself.
-- A grant is usable until `valid_until` and only once (`used`); the row is kept until
-- `keep_until` so that a second use of a code is recognised as such, and can revoke what the
-- first use produced. Times are Unix seconds; `payload` is the server's JSON.
CREATE TABLE auth_grant (
    id          TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    valid_until BIGINT  NOT NULL,
    keep_until  BIGINT  NOT NULL,
    used        BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX auth_grant_expiry ON auth_grant (keep_until);
