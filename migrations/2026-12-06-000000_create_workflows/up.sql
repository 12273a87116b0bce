-- Workflows of agent tasks, and the queue workers claim them from.
--
-- A workflow keeps counters of its tasks (remaining, succeeded, failed), updated in the
-- statement that finishes each task, so its status follows its tasks without counting
-- them. A task waits on `waiting_on` unfinished dependencies (the edges are in
-- content.task_dependencies) and is READY from `ready_at`; a worker holds it through
-- `lease_id` until `lease_expires_at`.
CREATE TABLE content.workflows (
    id            uuid PRIMARY KEY,
    owner_id      uuid NOT NULL,
    project_id    uuid,
    name          text NOT NULL,
    labels        jsonb NOT NULL DEFAULT '{}',
    -- 1 PENDING, 2 RUNNING, 3 SUCCEEDED, 4 FAILED, 5 CANCELLED
    status        smallint NOT NULL CHECK (status BETWEEN 1 AND 5),
    task_count    integer NOT NULL CHECK (task_count > 0),
    remaining     integer NOT NULL CHECK (remaining >= 0),
    succeeded     integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    request_id    uuid,
    request_hash  bytea,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    finished_at   timestamptz
) WITH (fillfactor = 80);
-- ListWorkflows: mine, newest first; and by status.
CREATE INDEX workflows_owner_created_idx ON content.workflows (owner_id, created_at, id);
CREATE INDEX workflows_owner_status_created_idx
    ON content.workflows (owner_id, status, created_at, id);
-- The retention task: finished workflows, oldest first.
CREATE INDEX workflows_finished_idx ON content.workflows (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX workflows_request_key ON content.workflows (owner_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE content.tasks (
    id                uuid PRIMARY KEY,
    workflow_id       uuid NOT NULL REFERENCES content.workflows (id) ON DELETE CASCADE,
    owner_id          uuid NOT NULL,
    position          integer NOT NULL,
    name              text NOT NULL,
    queue             text NOT NULL,
    agent_id          uuid,
    agent_version     integer,
    input             jsonb NOT NULL,
    output            jsonb,
    error             text,
    -- 1 PENDING, 2 READY, 3 RUNNING, 4 SUCCEEDED, 5 FAILED, 6 CANCELLED
    status            smallint NOT NULL CHECK (status BETWEEN 1 AND 6),
    attempt           integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts > 0),
    backoff_ms        bigint NOT NULL,
    max_backoff_ms    bigint NOT NULL,
    waiting_on        integer NOT NULL CHECK (waiting_on >= 0),
    depends_on        text[] NOT NULL DEFAULT '{}',
    ready_at          timestamptz,
    lease_id          uuid,
    lease_ms          bigint,
    lease_expires_at  timestamptz,
    created_at        timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL,
    -- Names are unique within a workflow (checked at creation; they never change).
    UNIQUE (workflow_id, position)
) WITH (fillfactor = 80);
-- ClaimTasks: an owner's ready tasks of a queue, oldest ready first.
CREATE INDEX tasks_ready_idx ON content.tasks (owner_id, queue, ready_at) WHERE status = 2;
-- The lease sweeper: running tasks by lease expiry.
CREATE INDEX tasks_lease_idx ON content.tasks (lease_expires_at) WHERE status = 3;

-- `task_id` waits for `depends_on` (both of `workflow_id`).
CREATE TABLE content.task_dependencies (
    workflow_id  uuid NOT NULL REFERENCES content.workflows (id) ON DELETE CASCADE,
    depends_on   uuid NOT NULL,
    task_id      uuid NOT NULL,
    PRIMARY KEY (depends_on, task_id)
);
CREATE INDEX task_dependencies_workflow_idx ON content.task_dependencies (workflow_id);

-- Conversations record the task that produced them.
ALTER TABLE content.conversations
    ADD COLUMN task_id uuid REFERENCES content.tasks (id) ON DELETE SET NULL;
CREATE INDEX conversations_task_idx ON content.conversations (task_id)
    WHERE task_id IS NOT NULL;
