DROP MATERIALIZED VIEW IF EXISTS analytics.project_stats;
DROP MATERIALIZED VIEW IF EXISTS analytics.user_token_summary;
DROP TABLE IF EXISTS analytics.view_refreshes;
DROP TABLE IF EXISTS analytics.view_state;
DROP FUNCTION IF EXISTS analytics.create_token_usage_partition(date);
DROP TABLE IF EXISTS analytics.usage_keys;
DROP TABLE IF EXISTS analytics.token_usage;
