-- SearchMessages: full text over the caller's own messages, in PostgreSQL alone. Each
-- message carries its conversation's owner (a conversation never changes owner), so one
-- GIN index over (owner, words) finds a user's matches without reading anyone else's.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- The searchable text of a message: its text parts and its tools' answers.
CREATE FUNCTION content.message_text(parts jsonb)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(coalesce(p ->> 'text', p -> 'tool_result' ->> 'content'), ' '), '')
    FROM jsonb_array_elements(CASE jsonb_typeof(parts) WHEN 'array' THEN parts ELSE '[]' END) AS p
$$;

ALTER TABLE content.messages ADD COLUMN owner_id uuid;
UPDATE content.messages m SET owner_id = c.owner_id
FROM content.conversations c WHERE c.id = m.conversation_id;
ALTER TABLE content.messages ALTER COLUMN owner_id SET NOT NULL;
ALTER TABLE content.messages ADD COLUMN document tsvector
    GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content.message_text(parts))) STORED;
CREATE INDEX messages_owner_document_idx ON content.messages USING gin (owner_id, document);
