-- A message's parent is a message of the same conversation: said by the schema, not only
-- by the service, so no walk up a branch can ever step into another conversation.
ALTER TABLE content.messages
    ADD CONSTRAINT messages_conversation_id_key UNIQUE (conversation_id, id);
ALTER TABLE content.messages DROP CONSTRAINT messages_parent_id_fkey;
ALTER TABLE content.messages
    ADD CONSTRAINT messages_parent_fkey FOREIGN KEY (conversation_id, parent_id)
    REFERENCES content.messages (conversation_id, id) ON DELETE CASCADE;
