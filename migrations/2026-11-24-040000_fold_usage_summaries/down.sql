ALTER TABLE analytics.view_state DROP COLUMN inserted_at_cut;
-- Back to materialized views holding the rows up to the current watermarks: their
-- queries read `cut`, so set it to the watermark before filling them.
UPDATE analytics.view_state SET cut = watermark;

DROP TABLE analytics.user_token_summary;
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
CREATE UNIQUE INDEX user_token_summary_key
    ON analytics.user_token_summary (user_id, day, model, operation);
CREATE INDEX user_token_summary_day_idx ON analytics.user_token_summary (day);

DROP TABLE analytics.project_stats;
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
GRANT SELECT ON analytics.user_token_summary, analytics.project_stats TO strata_explain;
