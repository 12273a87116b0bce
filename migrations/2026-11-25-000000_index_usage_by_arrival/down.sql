ALTER TABLE analytics.token_usage ADD COLUMN late boolean NOT NULL DEFAULT false;
UPDATE analytics.token_usage SET late = true
WHERE occurred_at < received_at - interval '1 hour';
CREATE INDEX token_usage_late_user_idx
    ON analytics.token_usage (user_id, received_at) WHERE late;
CREATE INDEX token_usage_late_project_idx
    ON analytics.token_usage (project_id, received_at) WHERE late AND project_id IS NOT NULL;

DROP INDEX analytics.token_usage_project_received_idx;
DROP INDEX analytics.token_usage_user_received_idx;
