-- Access predicates test a row's own token values of one parameter (labels: `_security`;
-- the stamped organization: `_tag`) for every candidate row: look them up by resource and
-- parameter rather than scan all of the resource's token rows. The old index is a prefix of
-- this one.
CREATE INDEX idx_token_resource_param ON idx_token (res_pk, param);
DROP INDEX idx_token_resource;
