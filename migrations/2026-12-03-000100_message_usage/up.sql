-- Token usage of messages, and the outbox it reaches analytics through.
--
-- A message produced by an LLM call may carry its usage ({"model", "provider",
-- "prompt_tokens", "completion_tokens", "cost"}; cost as decimal text). The append that
-- writes such a message writes a row here in the same statement, so usage is recorded
-- exactly when the message is. The content service's shipper (crates/content/src/usage.rs)
-- claims due rows with FOR UPDATE SKIP LOCKED (replicas share the work and never send a
-- row twice at once), sends them to analytics' RecordUsage with the row's id as the
-- idempotency key, and deletes them once analytics acknowledged them; while analytics
-- fails, the shipper pauses (exponential backoff) and the rows wait. A row analytics
-- refuses as invalid is kept, marked refused, for an operator; the others go on.
ALTER TABLE content.messages ADD COLUMN usage jsonb;

CREATE TABLE content.usage_outbox (
    id                uuid PRIMARY KEY,          -- the message's id: the idempotency key
    -- No foreign keys: the call was made and is billed even if its conversation is
    -- deleted before the row is shipped.
    owner_id          uuid NOT NULL,
    conversation_id   uuid NOT NULL,
    project_id        uuid,
    agent_id          uuid,
    agent_version     integer,
    model             text NOT NULL,
    provider          text NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost              numeric(20, 10) NOT NULL,
    occurred_at       timestamptz NOT NULL,
    -- W3C traceparent of the append, linked from the shipper's span.
    traceparent       text,
    refused_at        timestamptz,
    refusal           text
);

-- The shipper's claim: rows not refused, oldest first (refused rows never slow it down).
CREATE INDEX usage_outbox_due_idx ON content.usage_outbox (id) WHERE refused_at IS NULL;

GRANT SELECT ON content.usage_outbox TO strata_explain;
