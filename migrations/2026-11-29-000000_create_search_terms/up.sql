-- Search that stays fast when a word is common.
--
-- Ranking every project a GIN index finds costs a heap visit and a ts_rank_cd per hit
-- (about 5 µs): a word in half of 100,000 projects took 70 ms to rank, and a typo, compared
-- by trigrams with every project's words, 60-100 ms. Two structures fix both:
--
-- - content.project_terms: per lexeme of a project's document, the rank a search for that
--   one lexeme gives the project (ts_rank_cd, normalization 1, exactly as SearchProjects
--   ranks). A one-word search reads the best few straight from (lexeme, rank) in order.
-- - content.search_words: every word of every project's name, tags and description, once,
--   with a trigram index. A typo is corrected against it (a small table, not the
--   projects), as the pg_trgm documentation advises, and the corrected words searched.
--
-- Triggers keep both in step with every writer (the service, forks, `strata seed`).

CREATE TABLE content.project_terms (
    lexeme      text COLLATE "C" NOT NULL,
    project_id  uuid NOT NULL REFERENCES content.projects (id) ON DELETE CASCADE,
    rank        double precision NOT NULL,
    PRIMARY KEY (project_id, lexeme)                 -- rewritten when the project's words change
);
-- A one-word search: the best projects for a lexeme, keyset on (rank, id).
CREATE INDEX project_terms_rank_idx ON content.project_terms (lexeme, rank DESC, project_id DESC);

CREATE TABLE content.search_words (
    word  text COLLATE "C" PRIMARY KEY
);
-- Typo correction: the words similar to a misspelt one.
CREATE INDEX search_words_trgm_idx ON content.search_words USING gin (word gin_trgm_ops);

-- The terms of `document` with their one-lexeme ranks.
CREATE FUNCTION content.document_terms(document tsvector)
RETURNS TABLE (lexeme text, rank double precision) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t.lexeme, ts_rank_cd(document, quote_literal(t.lexeme)::tsquery, 1)::float8
    FROM unnest(document) AS t
$$;

-- The words of a project that typos are corrected to (3 to 40 characters).
CREATE FUNCTION content.project_search_words(name text, description text, tags text[])
RETURNS SETOF text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT DISTINCT w
    FROM regexp_split_to_table(
        lower(name || ' ' || array_to_string(tags, ' ') || ' ' || description),
        '[^[:alnum:]]+') AS w
    WHERE length(w) BETWEEN 3 AND 40
$$;

-- New projects (one statement may insert many: seeds, imports).
CREATE FUNCTION content.projects_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER projects_search_insert AFTER INSERT ON content.projects
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION content.projects_inserted();

-- A project whose words changed (likes, views and trending never fire it).
CREATE FUNCTION content.project_words_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER projects_search_update AFTER UPDATE OF name, description, tags
    ON content.projects FOR EACH ROW
    WHEN (OLD.document IS DISTINCT FROM NEW.document)
    EXECUTE FUNCTION content.project_words_changed();

-- Projects written before this migration.
INSERT INTO content.project_terms (lexeme, project_id, rank)
SELECT t.lexeme, p.id, t.rank FROM content.projects p, content.document_terms(p.document) t;
INSERT INTO content.search_words (word)
SELECT DISTINCT w FROM content.projects p,
    content.project_search_words(p.name, p.description, p.tags) AS w
ON CONFLICT DO NOTHING;

-- Typos no longer compare every project's words: that index and its function go.
DROP INDEX content.projects_words_trgm_idx;
DROP FUNCTION content.project_words(text, text[]);
