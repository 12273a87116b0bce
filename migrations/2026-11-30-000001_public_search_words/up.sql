-- Typo correction offered words of every project, private ones included: a caller could
-- learn whether a word occurs in someone's private project from whether it was corrected.
-- The dictionary now holds the words of public projects only (a project made public
-- adds its words; words of a project made private again stay: they were public). Words
-- are inserted in order, so concurrent writers cannot deadlock on them, and lexemes are
-- quoted as tsquery text (quote_literal writes E'…' for a backslash).

CREATE OR REPLACE FUNCTION content.document_terms(document tsvector)
RETURNS TABLE (lexeme text, rank double precision) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t.lexeme,
        ts_rank_cd(document,
            ('''' || replace(replace(t.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery,
            1)::float8
    FROM unnest(document) AS t
$$;

CREATE OR REPLACE FUNCTION content.projects_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO content.project_terms (lexeme, project_id, rank)
    SELECT t.lexeme, n.id, t.rank FROM new_rows n, content.document_terms(n.document) t;
    INSERT INTO content.search_words (word)
    SELECT DISTINCT w FROM new_rows n,
        content.project_search_words(n.name, n.description, n.tags) AS w
    WHERE n.visibility = 2
    ORDER BY w
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION content.project_words_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.document IS DISTINCT FROM NEW.document THEN
        DELETE FROM content.project_terms WHERE project_id = NEW.id;
        INSERT INTO content.project_terms (lexeme, project_id, rank)
        SELECT t.lexeme, NEW.id, t.rank FROM content.document_terms(NEW.document) t;
    END IF;
    IF NEW.visibility = 2 THEN
        INSERT INTO content.search_words (word)
        SELECT w FROM content.project_search_words(NEW.name, NEW.description, NEW.tags) AS w
        ORDER BY w
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER projects_search_update ON content.projects;
CREATE TRIGGER projects_search_update AFTER UPDATE OF name, description, tags, visibility
    ON content.projects FOR EACH ROW
    WHEN (OLD.document IS DISTINCT FROM NEW.document
          OR (NEW.visibility = 2 AND OLD.visibility IS DISTINCT FROM 2))
    EXECUTE FUNCTION content.project_words_changed();

-- The dictionary again, from public projects only.
TRUNCATE content.search_words;
INSERT INTO content.search_words (word)
SELECT DISTINCT w FROM content.projects p,
    content.project_search_words(p.name, p.description, p.tags) AS w
WHERE p.visibility = 2
ORDER BY w;
