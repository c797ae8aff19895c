-- Whether a resource's current version carries security labels (`meta.security`): label
-- predicates test a row's labels only when it has some, so that the common unlabelled row
-- costs one column read.
ALTER TABLE resources ADD COLUMN labelled BIGINT NOT NULL DEFAULT 1;
UPDATE resources SET labelled = CASE
    WHEN EXISTS (SELECT 1 FROM idx_token t WHERE t.res_pk = resources.pk AND t.param = '_security') THEN 1
    ELSE 0 END;
