CREATE OR REPLACE FUNCTION content.document_terms(document tsvector)
RETURNS TABLE (lexeme text, rank double precision) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t.lexeme, ts_rank_cd(document, quote_literal(t.lexeme)::tsquery, 1)::float8
    FROM unnest(document) AS t
$$;

CREATE OR REPLACE FUNCTION content.projects_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO content.project_terms (lexeme, project_id, rank)
    SELECT t.lexeme, n.id, t.rank FROM new_rows n, content.document_terms(n.document) t;
    INSERT INTO content.search_words (word)
    SELECT DISTINCT w FROM new_rows n,
        content.project_search_words(n.name, n.description, n.tags) AS w
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION content.project_words_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM content.project_terms WHERE project_id = NEW.id;
    INSERT INTO content.project_terms (lexeme, project_id, rank)
    SELECT t.lexeme, NEW.id, t.rank FROM content.document_terms(NEW.document) t;
    INSERT INTO content.search_words (word)
    SELECT w FROM content.project_search_words(NEW.name, NEW.description, NEW.tags) AS w
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

DROP TRIGGER projects_search_update ON content.projects;
CREATE TRIGGER projects_search_update AFTER UPDATE OF name, description, tags
    ON content.projects FOR EACH ROW
    WHEN (OLD.document IS DISTINCT FROM NEW.document)
    EXECUTE FUNCTION content.project_words_changed();

INSERT INTO content.search_words (word)
SELECT DISTINCT w FROM content.projects p,
    content.project_search_words(p.name, p.description, p.tags) AS w
ON CONFLICT DO NOTHING;
