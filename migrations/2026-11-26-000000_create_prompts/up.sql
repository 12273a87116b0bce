-- Prompts of each user: immutable versions, movable labels and the history of every move.
-- The version, label and move tables of every versioned resource share one shape (`item_id`
-- names the resource), so one piece of code serves them all.

CREATE TABLE content.prompts (
    id            uuid PRIMARY KEY,                  -- UUIDv7: time-ordered, keyset-friendly
    owner_id      uuid NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tags          text[] NOT NULL DEFAULT '{}',
    is_favorite   boolean NOT NULL DEFAULT false,
    labels        jsonb NOT NULL DEFAULT '{}',       -- the owner's metadata map
    last_number   integer NOT NULL,                  -- highest version number given: never reused
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    request_id    uuid,                              -- AIP-155 idempotency key of the creation
    request_hash  bytea
);
-- Names are unique per owner; text_pattern_ops lets the same index serve the folder
-- filter (name LIKE 'folder/%').
CREATE UNIQUE INDEX prompts_owner_name_key ON content.prompts (owner_id, name text_pattern_ops);
-- ListPrompts: the owner's prompts, newest first (keyset on created_at, id).
CREATE INDEX prompts_owner_created_idx ON content.prompts (owner_id, created_at DESC, id DESC);
-- ListPrompts with favorites_only.
CREATE INDEX prompts_owner_favorites_idx ON content.prompts (owner_id, created_at DESC, id DESC)
    WHERE is_favorite;
-- ListPrompts by tag.
CREATE INDEX prompts_tags_idx ON content.prompts USING gin (tags);
-- ListPrompts by name_query (substring, case-insensitive).
CREATE INDEX prompts_name_trgm_idx ON content.prompts USING gin (lower(name) gin_trgm_ops);
-- A retried CreatePrompt finds the prompt its first attempt made.
CREATE UNIQUE INDEX prompts_request_key ON content.prompts (owner_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE content.prompt_versions (
    item_id          uuid NOT NULL REFERENCES content.prompts (id) ON DELETE CASCADE,
    version          integer NOT NULL CHECK (version > 0),
    template         text NOT NULL,
    variables        text[] NOT NULL,
    model_parameters jsonb NOT NULL DEFAULT '{}',
    created_by       uuid NOT NULL,
    created_at       timestamptz NOT NULL,
    request_id       uuid,
    request_hash     bytea,
    PRIMARY KEY (item_id, version)                   -- also ListPromptVersions, newest first
);
CREATE UNIQUE INDEX prompt_versions_request_key ON content.prompt_versions (item_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE content.prompt_labels (
    item_id     uuid NOT NULL REFERENCES content.prompts (id) ON DELETE CASCADE,
    label       text NOT NULL,
    versions    integer[] NOT NULL CHECK (cardinality(versions) BETWEEN 1 AND 10),
    weights     integer[] NOT NULL CHECK (cardinality(weights) = cardinality(versions)),
    updated_by  uuid NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (item_id, label)
);

-- Append-only: every move of a label, never updated.
CREATE TABLE content.prompt_label_moves (
    id             bigint GENERATED ALWAYS AS IDENTITY,
    item_id        uuid NOT NULL REFERENCES content.prompts (id) ON DELETE CASCADE,
    label          text NOT NULL,
    from_versions  integer[] NOT NULL,
    from_weights   integer[] NOT NULL,
    to_versions    integer[] NOT NULL,
    to_weights     integer[] NOT NULL,
    actor_id       uuid NOT NULL,
    moved_at       timestamptz NOT NULL,
    PRIMARY KEY (item_id, id)                        -- a prompt's history, newest first
);
-- One label's history, newest first.
CREATE INDEX prompt_label_moves_label_idx ON content.prompt_label_moves (item_id, label, id);
