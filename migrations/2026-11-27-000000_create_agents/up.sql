-- Agents of each user: a versioned definition (model, system prompt, config, tools) with
-- movable labels and their history, in the same shape as prompts (see create_prompts).

CREATE TABLE content.agents (
    id            uuid PRIMARY KEY,                  -- UUIDv7
    owner_id      uuid NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    type          text NOT NULL CHECK (length(type) BETWEEN 1 AND 63),
    status        smallint NOT NULL CHECK (status BETWEEN 1 AND 3),  -- ACTIVE, PAUSED, ARCHIVED
    labels        jsonb NOT NULL DEFAULT '{}',
    last_number   integer NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    request_id    uuid,
    request_hash  bytea
);
-- ListAgents: the owner's agents, newest first (keyset on created_at, id).
CREATE INDEX agents_owner_created_idx ON content.agents (owner_id, created_at DESC, id DESC);
-- ListAgents by status.
CREATE INDEX agents_owner_status_idx ON content.agents (owner_id, status, created_at DESC, id DESC);
-- ListAgents by type.
CREATE INDEX agents_owner_type_idx ON content.agents (owner_id, type, created_at DESC, id DESC);
-- ListAgents by name_query (substring, case-insensitive).
CREATE INDEX agents_name_trgm_idx ON content.agents USING gin (lower(name) gin_trgm_ops);
-- A retried CreateAgent finds the agent its first attempt made.
CREATE UNIQUE INDEX agents_request_key ON content.agents (owner_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE content.agent_versions (
    item_id        uuid NOT NULL REFERENCES content.agents (id) ON DELETE CASCADE,
    version        integer NOT NULL CHECK (version > 0),
    model          text NOT NULL,
    system_prompt  text NOT NULL,
    config         jsonb NOT NULL DEFAULT '{}',
    tools          jsonb NOT NULL DEFAULT '[]',
    created_by     uuid NOT NULL,
    created_at     timestamptz NOT NULL,
    request_id     uuid,
    request_hash   bytea,
    PRIMARY KEY (item_id, version)
);
CREATE UNIQUE INDEX agent_versions_request_key ON content.agent_versions (item_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE content.agent_labels (
    item_id     uuid NOT NULL REFERENCES content.agents (id) ON DELETE CASCADE,
    label       text NOT NULL,
    versions    integer[] NOT NULL CHECK (cardinality(versions) BETWEEN 1 AND 10),
    weights     integer[] NOT NULL CHECK (cardinality(weights) = cardinality(versions)),
    updated_by  uuid NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (item_id, label)
);

CREATE TABLE content.agent_label_moves (
    id             bigint GENERATED ALWAYS AS IDENTITY,
    item_id        uuid NOT NULL REFERENCES content.agents (id) ON DELETE CASCADE,
    label          text NOT NULL,
    from_versions  integer[] NOT NULL,
    from_weights   integer[] NOT NULL,
    to_versions    integer[] NOT NULL,
    to_weights     integer[] NOT NULL,
    actor_id       uuid NOT NULL,
    moved_at       timestamptz NOT NULL,
    PRIMARY KEY (item_id, id)
);
CREATE INDEX agent_label_moves_label_idx ON content.agent_label_moves (item_id, label, id);
