-- Authorization state every node must share: client-assertion jtis already used (replay
-- protection for private_key_jwt) and revoked tokens (an access token's jti, or a refresh
-- family, which revokes every token derived from it). Rows are kept until the token or
-- assertion would have expired anyway. Times are Unix seconds.
CREATE TABLE auth_jti (
    client_id  TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX auth_jti_expiry ON auth_jti (expires_at);

CREATE TABLE auth_revoked (
    token_id   TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_revoked_expiry ON auth_revoked (expires_at);
