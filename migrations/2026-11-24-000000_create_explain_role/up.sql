-- The role ExplainQuery runs statements as: it reads what an operator needs to tune
-- queries and nothing secret. No password hash, refresh-token or API-key hash, and no
-- signing-key material is readable through it, in any way a SELECT can put it.
--
-- Roles belong to the cluster, not the database: the role is created once (several
-- databases may migrate at the same moment, hence the exception handler), and every
-- database grants it its own privileges below.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'strata_explain') THEN
        BEGIN
            CREATE ROLE strata_explain NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                NOINHERIT NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created concurrently by another database's migration
        END;
    END IF;
    -- The service switches to it with SET LOCAL ROLE, which needs membership unless the
    -- service's own role is a superuser.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'strata_explain', 'MEMBER') THEN
        EXECUTE format('GRANT strata_explain TO %I', current_user);
    END IF;
END
$$;

-- Reads: every schema of the suite, but column by column where a table holds secrets.
-- A column missing here is unreadable (SELECT *, row_to_json, a WHERE on it: all
-- refused with permission denied, with or without ANALYZE, since privileges are checked
-- when the plan is built).
GRANT USAGE ON SCHEMA auth, content, analytics TO strata_explain;
GRANT SELECT (id, email, display_name, avatar_url, bio, locale, time_zone, role, status,
              created_at, updated_at, password_changed_at)            -- not password_hash
    ON auth.users TO strata_explain;
GRANT SELECT ON auth.sessions TO strata_explain;
GRANT SELECT (id, session_id, family_id, parent_id, created_at, expires_at, used_at,
              revoked_at)                                             -- not token_hash
    ON auth.refresh_tokens TO strata_explain;
GRANT SELECT (id, user_id, name, prefix, scopes, created_at, last_used_at, expires_at,
              revoked_at)                                             -- not key_hash
    ON auth.api_keys TO strata_explain;
GRANT SELECT (kid, public_key, created_at, retired_at)                -- not private_key
    ON auth.signing_keys TO strata_explain;
-- The ledger and its views hold no secrets; tables added to analytics and content later
-- are readable too (auth's are not: a new auth table is unreadable until granted here).
GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO strata_explain;
ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO strata_explain;
ALTER DEFAULT PRIVILEGES IN SCHEMA content GRANT SELECT ON TABLES TO strata_explain;
GRANT SELECT ON public.strata_schema_migrations TO strata_explain;

-- The statement runs inside this function, which belongs to strata_explain and runs as
-- its owner (SECURITY DEFINER). PostgreSQL forbids changing `role` or
-- `session_authorization` inside a security-definer function, so the statement cannot
-- switch back to the service's role with set_config('role', ...) — which it otherwise
-- could, SET ROLE being checked against the session's user, not the current one.
CREATE SCHEMA explain;
GRANT USAGE, CREATE ON SCHEMA explain TO strata_explain;
CREATE FUNCTION explain.plan(statement text) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    line text;
BEGIN
    -- `statement` is EXPLAIN (...) followed by one SELECT the service checked.
    FOR line IN EXECUTE statement LOOP
        RETURN NEXT line;
    END LOOP;
END
$$;
ALTER FUNCTION explain.plan(text) OWNER TO strata_explain;
REVOKE CREATE ON SCHEMA explain FROM strata_explain;
REVOKE ALL ON FUNCTION explain.plan(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION explain.plan(text) TO strata_explain;
