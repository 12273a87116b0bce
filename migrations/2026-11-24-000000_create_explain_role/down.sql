-- Revokes everything strata_explain holds in this database and drops what it owns (the
-- function). The role itself is dropped only when no other database still grants it
-- something.
DROP OWNED BY strata_explain;
DROP SCHEMA IF EXISTS explain;
DO $$
BEGIN
    DROP ROLE strata_explain;
EXCEPTION WHEN dependent_objects_still_exist OR undefined_object THEN
    NULL;
END
$$;
