-- One schema per service; a service's crate is the only code that touches its schema.
CREATE SCHEMA IF NOT EXISTS auth;
CREATE SCHEMA IF NOT EXISTS content;
CREATE SCHEMA IF NOT EXISTS analytics;

-- Trigram indexes back prefix/substring search (emails, names, titles).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- pg_stat_statements only works when the server preloads it; creating the extension
-- elsewhere would succeed but every read of the view would fail, so skip it there.
DO $$
BEGIN
    IF current_setting('shared_preload_libraries') ~ '(^|[ ,])pg_stat_statements($|[ ,])'
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements') THEN
        CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
    END IF;
END
$$;
