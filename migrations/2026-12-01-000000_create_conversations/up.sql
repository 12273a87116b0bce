-- Conversations of each user, their messages as rows of a tree (never one blob), and the
-- appends a retry finds again.

CREATE TABLE content.conversations (
    id              uuid PRIMARY KEY,                  -- UUIDv7
    owner_id        uuid NOT NULL,
    agent_id        uuid,                              -- the agent it talks to (no FK: an
    agent_version   integer,                           --   agent's deletion keeps the history)
    project_id      uuid,                              -- likewise
    title           text NOT NULL DEFAULT '',
    labels          jsonb NOT NULL DEFAULT '{}',
    archived        boolean NOT NULL DEFAULT false,
    message_count   bigint NOT NULL DEFAULT 0,
    last_sequence   bigint NOT NULL DEFAULT 0,         -- the last sequence number given
    active_leaf     uuid,                              -- newest message of the active branch
    last_message_at timestamptz,
    active_at       timestamptz NOT NULL,              -- last message, else creation
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    request_id      uuid,
    request_hash    bytea,
    CHECK ((agent_id IS NULL) = (agent_version IS NULL))
);
-- ListConversations: mine by last activity, not archived (the default) or archived only.
CREATE INDEX conversations_owner_active_idx
    ON content.conversations (owner_id, archived, active_at DESC, id DESC);
-- ListConversations of every archiving state.
CREATE INDEX conversations_owner_all_idx
    ON content.conversations (owner_id, active_at DESC, id DESC);
-- ListConversations of an agent, of a project.
CREATE INDEX conversations_agent_idx
    ON content.conversations (owner_id, agent_id, active_at DESC, id DESC)
    WHERE agent_id IS NOT NULL;
CREATE INDEX conversations_project_idx
    ON content.conversations (owner_id, project_id, active_at DESC, id DESC)
    WHERE project_id IS NOT NULL;
CREATE UNIQUE INDEX conversations_request_key ON content.conversations (owner_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE content.messages (
    conversation_id uuid NOT NULL REFERENCES content.conversations (id) ON DELETE CASCADE,
    sequence        bigint NOT NULL CHECK (sequence > 0),
    id              uuid NOT NULL UNIQUE,              -- UUIDv7
    parent_id       uuid REFERENCES content.messages (id) ON DELETE CASCADE,
    role            smallint NOT NULL CHECK (role BETWEEN 1 AND 4),
    parts           jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, sequence)            -- a conversation's messages in order
);
-- The answers to a message (its branches).
CREATE INDEX messages_parent_idx ON content.messages (parent_id) WHERE parent_id IS NOT NULL;

-- Appends made with a request_id: a retry returns the same messages.
CREATE TABLE content.message_appends (
    conversation_id uuid NOT NULL REFERENCES content.conversations (id) ON DELETE CASCADE,
    request_id      uuid NOT NULL,
    request_hash    bytea NOT NULL,
    first_sequence  bigint NOT NULL,
    count           integer NOT NULL,
    PRIMARY KEY (conversation_id, request_id)
);
