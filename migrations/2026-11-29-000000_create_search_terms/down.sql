CREATE FUNCTION content.project_words(name text, tags text[])
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(name || ' ' || array_to_string(tags, ' '))
$$;
CREATE INDEX projects_words_trgm_idx ON content.projects
    USING gin (content.project_words(name, tags) gin_trgm_ops);
DROP TRIGGER projects_search_update ON content.projects;
DROP TRIGGER projects_search_insert ON content.projects;
DROP FUNCTION content.project_words_changed();
DROP FUNCTION content.projects_inserted();
DROP FUNCTION content.project_search_words(text, text, text[]);
DROP FUNCTION content.document_terms(tsvector);
DROP TABLE content.search_words;
DROP TABLE content.project_terms;
