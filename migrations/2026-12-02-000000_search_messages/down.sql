DROP INDEX content.messages_owner_document_idx;
ALTER TABLE content.messages DROP COLUMN document;
ALTER TABLE content.messages DROP COLUMN owner_id;
DROP FUNCTION content.message_text(jsonb);
