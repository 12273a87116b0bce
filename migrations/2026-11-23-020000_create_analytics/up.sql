-- The analytics service's LLM token-usage ledger, its materialized views, and the state
-- of their refreshes. The service is the only code that reads or writes this schema.

-- One row per LLM call. Rows are never updated or deleted by the service: the cost is
-- stored per row (priced when the call was made), so later price changes never rewrite
-- history. Range-partitioned by month of occurred_at; partitions are created ahead of
-- time by the service (analytics.create_token_usage_partition) and on demand for late
-- events, never through a DEFAULT partition (which would block creating the month later).
CREATE TABLE analytics.token_usage (
    id                uuid NOT NULL,                  -- UUIDv7, server-assigned
    producer_id       uuid NOT NULL,                  -- account that recorded it
    idempotency_key   text NOT NULL,                  -- unique per producer (usage_keys)
    user_id           uuid NOT NULL,
    project_id        uuid,
    conversation_id   uuid,
    model             text NOT NULL CHECK (length(model) BETWEEN 1 AND 100),
    provider          text NOT NULL CHECK (length(provider) BETWEEN 1 AND 50),
    operation         text NOT NULL CHECK (operation IN
                          ('chat', 'completion', 'embedding', 'image', 'audio', 'moderation', 'rerank')),
    prompt_tokens     bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens bigint NOT NULL CHECK (completion_tokens >= 0),
    total_tokens      bigint GENERATED ALWAYS AS (prompt_tokens + completion_tokens) STORED,
    cost              numeric(20, 10) NOT NULL CHECK (cost >= 0),
    latency_ms        integer CHECK (latency_ms >= 0),
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
    occurred_at       timestamptz NOT NULL,
    -- clock_timestamp(), evaluated when the row is written (after the insert got its
    -- table lock), never a client value: the views' watermark relies on it (see
    -- view_state below).
    received_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set by the insert: the call occurred more than an hour before it arrived
    -- (occurred_at < clock_timestamp() - 1 hour). See the late-arrival indexes below.
    late              boolean NOT NULL DEFAULT false,
    -- occurred_at first: the primary key doubles as the time-only index that global
    -- aggregations and the admin's ListUsage (occurred_at DESC, id DESC) scan.
    PRIMARY KEY (occurred_at, id)
) PARTITION BY RANGE (occurred_at);

-- A user's usage over time: summaries from raw rows, ListUsage keyset (newest first).
CREATE INDEX token_usage_user_time_idx
    ON analytics.token_usage (user_id, occurred_at DESC, id DESC);
-- A user's usage of one operation (endpoint) over time: ListUsage filtered by operation.
CREATE INDEX token_usage_user_operation_time_idx
    ON analytics.token_usage (user_id, operation, occurred_at DESC, id DESC);
-- A project's usage over time: project summaries and listings.
CREATE INDEX token_usage_project_time_idx
    ON analytics.token_usage (project_id, occurred_at DESC, id DESC)
    WHERE project_id IS NOT NULL;
-- One model's usage over time: listings filtered by model across users.
CREATE INDEX token_usage_model_time_idx
    ON analytics.token_usage (model, occurred_at DESC, id DESC);
-- Real-time reads add the rows received after a view's watermark W. Those that are not
-- late occurred after W - 2 hours (they arrived after W, within an hour of occurring, plus
-- an hour of margin), so the time indexes above find them in a short range. Late ones can belong to any day;
-- these partial indexes find them by arrival, and cost nothing for on-time ingest.
CREATE INDEX token_usage_late_user_idx
    ON analytics.token_usage (user_id, received_at) WHERE late;
CREATE INDEX token_usage_late_project_idx
    ON analytics.token_usage (project_id, received_at) WHERE late AND project_id IS NOT NULL;
-- All-user reads after the watermark, and the refresh scan. Rows arrive in received_at
-- order, so a BRIN index is tiny and nearly free to maintain.
CREATE INDEX token_usage_received_brin
    ON analytics.token_usage USING brin (received_at) WITH (pages_per_range = 32, autosummarize = on);

-- Idempotency: one row per (producer, key), for the life of the ledger. A unique index on
-- the partitioned table would have to include occurred_at, and so would miss a replay
-- that lands in another month; this table does not.
CREATE TABLE analytics.usage_keys (
    producer_id     uuid NOT NULL,
    idempotency_key text NOT NULL,
    usage_id        uuid NOT NULL,
    PRIMARY KEY (producer_id, idempotency_key)
);

-- Creates the month partition holding `month_start` unless it exists; returns whether it
-- did. Serialized by an advisory lock (concurrent CREATEs of one name would collide). The
-- table is created alone and then attached, which takes a SHARE UPDATE EXCLUSIVE lock on
-- the parent instead of the ACCESS EXCLUSIVE lock of CREATE TABLE ... PARTITION OF, so
-- reads and inserts carry on meanwhile.
CREATE FUNCTION analytics.create_token_usage_partition(month_start date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first_day timestamp := date_trunc('month', month_start::timestamp);
    part      text := 'token_usage_' || to_char(first_day, 'YYYY_MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('strata.analytics.token_usage.partitions'));
    IF to_regclass(format('analytics.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE analytics.%I (LIKE analytics.token_usage INCLUDING DEFAULTS '
        'INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE)', part);
    -- Bounds are UTC midnights, computed on timestamp (not timestamptz) so the session's
    -- time zone cannot shift them.
    EXECUTE format(
        'ALTER TABLE analytics.token_usage ATTACH PARTITION analytics.%I FOR VALUES FROM (%L) TO (%L)',
        part, first_day AT TIME ZONE 'UTC', (first_day + interval '1 month') AT TIME ZONE 'UTC');
    RETURN true;
END
$$;

-- Two months back to three ahead; the service keeps creating months ahead of time.
SELECT analytics.create_token_usage_partition(
           (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => m))::date)
FROM generate_series(-2, 3) AS m;

-- Refresh state of each materialized view.
--
-- A view holds exactly the rows with received_at <= its watermark. A refresh first sets
-- `cut`: it takes a SHARE lock on token_usage (waiting for in-flight inserts, holding off
-- new ones for that instant), reads clock_timestamp() and commits. Every row with
-- received_at <= cut is then committed, and every later insert gets a later received_at.
-- It then refreshes the view, whose query reads `cut`, and sets watermark = cut in the
-- same transaction. A reader that reads watermark and view together (one snapshot) and
-- adds the raw rows with received_at > watermark counts every row exactly once.
CREATE TABLE analytics.view_state (
    view_name        text PRIMARY KEY,
    cut              timestamptz NOT NULL DEFAULT '-infinity',
    watermark        timestamptz NOT NULL DEFAULT '-infinity',
    refreshed_at     timestamptz,
    duration_ms      bigint,
    row_count        bigint,
    refresh_count    bigint NOT NULL DEFAULT 0
);
INSERT INTO analytics.view_state (view_name) VALUES ('user_token_summary'), ('project_stats');

-- Every refresh, for operators: watermark, duration, rows, who ran it.
CREATE TABLE analytics.view_refreshes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view_name    text NOT NULL REFERENCES analytics.view_state (view_name),
    watermark    timestamptz NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  bigint NOT NULL,
    row_count    bigint NOT NULL,
    refreshed_by text NOT NULL
);
CREATE INDEX view_refreshes_view_idx ON analytics.view_refreshes (view_name, id DESC);

-- Per user, UTC day, model and operation (summing over operation gives the per user, day
-- and model figures; keeping it lets summaries group by operation too).
CREATE MATERIALIZED VIEW analytics.user_token_summary AS
SELECT u.user_id,
       (u.occurred_at AT TIME ZONE 'UTC')::date AS day,
       u.model,
       u.operation,
       count(*)                         AS request_count,
       sum(u.prompt_tokens)::bigint     AS prompt_tokens,
       sum(u.completion_tokens)::bigint AS completion_tokens,
       sum(u.total_tokens)::bigint      AS total_tokens,
       sum(u.cost)                      AS cost
FROM analytics.token_usage u
WHERE u.received_at <= (SELECT cut FROM analytics.view_state WHERE view_name = 'user_token_summary')
GROUP BY 1, 2, 3, 4;
-- REFRESH ... CONCURRENTLY needs a unique index; it is also the summary's access path.
CREATE UNIQUE INDEX user_token_summary_key
    ON analytics.user_token_summary (user_id, day, model, operation);
-- All-user reads (admins) by day.
CREATE INDEX user_token_summary_day_idx ON analytics.user_token_summary (day);

-- Per project, all time.
CREATE MATERIALIZED VIEW analytics.project_stats AS
SELECT u.project_id,
       count(*)                         AS request_count,
       sum(u.prompt_tokens)::bigint     AS prompt_tokens,
       sum(u.completion_tokens)::bigint AS completion_tokens,
       sum(u.total_tokens)::bigint      AS total_tokens,
       sum(u.cost)                      AS cost,
       min(u.occurred_at)               AS first_activity_at,
       max(u.occurred_at)               AS last_activity_at,
       array_agg(DISTINCT u.model ORDER BY u.model) AS models
FROM analytics.token_usage u
WHERE u.project_id IS NOT NULL
  AND u.received_at <= (SELECT cut FROM analytics.view_state WHERE view_name = 'project_stats')
GROUP BY u.project_id;
CREATE UNIQUE INDEX project_stats_key ON analytics.project_stats (project_id);
