-- Projects of each user, public ones discoverable; likes as rows; views per unique viewer
-- per day (counted in Redis, folded here in batches); trending as a stored rank; files
-- whose bytes are stored once per SHA-256.

-- The words of a project that search matches: name (weight A), tags (B), description (C).
-- IMMUTABLE (the configuration is named), so a generated column and an index can use it.
CREATE FUNCTION content.project_document(name text, description text, tags text[])
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('english'::regconfig, name), 'A')
        || setweight(to_tsvector('english'::regconfig, array_to_string(tags, ' ')), 'B')
        || setweight(to_tsvector('english'::regconfig, description), 'C')
$$;

-- The text typo-tolerant search compares by trigrams: name and tags, lowercase.
CREATE FUNCTION content.project_words(name text, tags text[])
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(name || ' ' || array_to_string(tags, ' '))
$$;

CREATE TABLE content.projects (
    id            uuid PRIMARY KEY,                  -- UUIDv7
    owner_id      uuid NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description   text NOT NULL DEFAULT '',
    visibility    smallint NOT NULL CHECK (visibility IN (1, 2)),   -- PRIVATE, PUBLIC
    type          text NOT NULL,
    tags          text[] NOT NULL DEFAULT '{}',
    labels        jsonb NOT NULL DEFAULT '{}',
    like_count    bigint NOT NULL DEFAULT 0,         -- follows content.project_likes
    fork_count    bigint NOT NULL DEFAULT 0,
    view_count    bigint NOT NULL DEFAULT 0,         -- sum of content.project_views
    featured      boolean NOT NULL DEFAULT false,
    forked_from   uuid REFERENCES content.projects (id) ON DELETE SET NULL,
    trending      double precision NOT NULL DEFAULT 0,  -- stored rank (formula: README, "Content")
    active_at     timestamptz NOT NULL,              -- last like, fork, view or change
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    request_id    uuid,
    request_hash  bytea,
    document      tsvector GENERATED ALWAYS AS
                      (content.project_document(name, description, tags)) STORED
);
-- ListProjects: the owner's projects, by last update.
CREATE INDEX projects_owner_updated_idx ON content.projects (owner_id, updated_at DESC, id DESC);
-- ListPublicProjects, one index per order, public projects only.
CREATE INDEX projects_public_likes_idx ON content.projects (like_count DESC, id DESC)
    WHERE visibility = 2;
CREATE INDEX projects_public_forks_idx ON content.projects (fork_count DESC, id DESC)
    WHERE visibility = 2;
CREATE INDEX projects_public_views_idx ON content.projects (view_count DESC, id DESC)
    WHERE visibility = 2;
CREATE INDEX projects_public_newest_idx ON content.projects (created_at DESC, id DESC)
    WHERE visibility = 2;
CREATE INDEX projects_public_trending_idx ON content.projects (trending DESC, id DESC)
    WHERE visibility = 2;
-- The featured few, listed first when asked.
CREATE INDEX projects_featured_idx ON content.projects (id) WHERE visibility = 2 AND featured;
-- The trending task: public projects active lately.
CREATE INDEX projects_public_active_idx ON content.projects (active_at) WHERE visibility = 2;
-- SearchProjects: full text, and trigrams when the text search finds little.
CREATE INDEX projects_document_idx ON content.projects USING gin (document);
CREATE INDEX projects_words_trgm_idx ON content.projects
    USING gin (content.project_words(name, tags) gin_trgm_ops);
-- Forks of a project (ON DELETE SET NULL finds them).
CREATE INDEX projects_forked_from_idx ON content.projects (forked_from)
    WHERE forked_from IS NOT NULL;
CREATE UNIQUE INDEX projects_request_key ON content.projects (owner_id, request_id)
    WHERE request_id IS NOT NULL;

-- One row per user who likes a project: the source of truth of like_count.
CREATE TABLE content.project_likes (
    project_id  uuid NOT NULL REFERENCES content.projects (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (project_id, user_id)
);

-- Unique viewers of a project per day, folded from Redis (the day's HyperLogLog count).
CREATE TABLE content.project_views (
    project_id  uuid NOT NULL REFERENCES content.projects (id) ON DELETE CASCADE,
    day         date NOT NULL,
    viewers     bigint NOT NULL CHECK (viewers >= 0),
    PRIMARY KEY (project_id, day)
);

-- File contents, stored once per SHA-256 whatever the number of files and forks using them.
CREATE TABLE content.blobs (
    hash     bytea PRIMARY KEY CHECK (length(hash) = 32),
    size     bigint NOT NULL,
    content  bytea NOT NULL
);

CREATE TABLE content.project_files (
    project_id  uuid NOT NULL REFERENCES content.projects (id) ON DELETE CASCADE,
    path        text COLLATE "C" NOT NULL,           -- byte order: keyset and prefix scans
    language    text NOT NULL,
    hash        bytea NOT NULL REFERENCES content.blobs (hash),
    size        bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (project_id, path)                   -- ListFiles by path, prefix filters
);
