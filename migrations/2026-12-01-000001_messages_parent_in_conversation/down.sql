ALTER TABLE content.messages DROP CONSTRAINT messages_parent_fkey;
ALTER TABLE content.messages
    ADD CONSTRAINT messages_parent_id_fkey FOREIGN KEY (parent_id)
    REFERENCES content.messages (id) ON DELETE CASCADE;
ALTER TABLE content.messages DROP CONSTRAINT messages_conversation_id_key;
