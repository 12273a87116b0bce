-- The summaries become tables folded incrementally instead of materialized views
-- refreshed whole. A refresh used to aggregate the entire ledger (minutes at tens of
-- millions of rows), so it ran hourly and real-time reads summed every row received
-- since: their cost grew with the tail. A fold adds only the rows received in
-- (watermark, cut] to the running totals (ON CONFLICT ... DO UPDATE), in the same
-- transaction that moves the watermark to the cut, so it costs what arrived since the
-- last fold and can run every few seconds; the tail real-time reads add stays short.
--
-- The invariant is unchanged (see view_state): a summary holds exactly the rows with
-- received_at <= its watermark, and a reader reading watermark and summary in one
-- snapshot adds the raw rows after the watermark. The copies below start from the
-- views' contents, which hold exactly the rows up to the current watermarks.

CREATE TABLE analytics.user_token_summary_folded (
    user_id           uuid   NOT NULL,
    day               date   NOT NULL,
    model             text   NOT NULL,
    operation         text   NOT NULL,
    request_count     bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    total_tokens      bigint NOT NULL,
    cost              numeric NOT NULL,
    CONSTRAINT user_token_summary_folded_key PRIMARY KEY (user_id, day, model, operation)
);
INSERT INTO analytics.user_token_summary_folded
SELECT user_id, day, model, operation, request_count, prompt_tokens, completion_tokens,
       total_tokens, cost
FROM analytics.user_token_summary;
DROP MATERIALIZED VIEW analytics.user_token_summary;
ALTER TABLE analytics.user_token_summary_folded RENAME TO user_token_summary;
-- (Renaming the constraint renames its index.)
ALTER TABLE analytics.user_token_summary
    RENAME CONSTRAINT user_token_summary_folded_key TO user_token_summary_key;
-- All-user reads (admins) by day.
CREATE INDEX user_token_summary_day_idx ON analytics.user_token_summary (day);

CREATE TABLE analytics.project_stats_folded (
    project_id        uuid        NOT NULL,
    request_count     bigint      NOT NULL,
    prompt_tokens     bigint      NOT NULL,
    completion_tokens bigint      NOT NULL,
    total_tokens      bigint      NOT NULL,
    cost              numeric     NOT NULL,
    first_activity_at timestamptz NOT NULL,
    last_activity_at  timestamptz NOT NULL,
    models            text[]      NOT NULL,
    CONSTRAINT project_stats_folded_key PRIMARY KEY (project_id)
);
INSERT INTO analytics.project_stats_folded
SELECT project_id, request_count, prompt_tokens, completion_tokens, total_tokens, cost,
       first_activity_at, last_activity_at, models
FROM analytics.project_stats;
DROP MATERIALIZED VIEW analytics.project_stats;
ALTER TABLE analytics.project_stats_folded RENAME TO project_stats;
ALTER TABLE analytics.project_stats
    RENAME CONSTRAINT project_stats_folded_key TO project_stats_key;

-- row_count now counts the rows of each summary as the folds add them.
UPDATE analytics.view_state
SET row_count = (SELECT count(*) FROM analytics.user_token_summary)
WHERE view_name = 'user_token_summary';
UPDATE analytics.view_state
SET row_count = (SELECT count(*) FROM analytics.project_stats)
WHERE view_name = 'project_stats';

-- Ledger inserts (cumulative statistics) at each summary's last cut: the scheduler folds
-- early once enough rows arrived since, so the tail stays short under heavy ingest.
ALTER TABLE analytics.view_state ADD COLUMN inserted_at_cut bigint;
