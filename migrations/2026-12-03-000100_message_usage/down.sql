DROP TABLE content.usage_outbox;
ALTER TABLE content.messages DROP COLUMN usage;
