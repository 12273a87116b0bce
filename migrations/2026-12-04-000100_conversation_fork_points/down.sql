ALTER TABLE content.conversations DROP COLUMN fork_point;
