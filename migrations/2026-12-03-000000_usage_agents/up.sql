-- The agent (and its version) that made an LLM call, when the producer knows it: the
-- content service's usage shipper sends it for the messages of an agent's conversations.
-- Nullable and without default: adding them rewrites no partition.
ALTER TABLE analytics.token_usage
    ADD COLUMN agent_id uuid,
    ADD COLUMN agent_version integer CHECK (agent_version >= 1),
    ADD CONSTRAINT token_usage_agent_version_has_agent
        CHECK (agent_version IS NULL OR agent_id IS NOT NULL);
