ALTER TABLE content.projects DROP COLUMN file_count;
