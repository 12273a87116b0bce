ALTER TABLE analytics.token_usage
    DROP CONSTRAINT token_usage_agent_version_has_agent,
    DROP COLUMN agent_version,
    DROP COLUMN agent_id;
