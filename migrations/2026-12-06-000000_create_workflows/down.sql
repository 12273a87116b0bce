ALTER TABLE content.conversations DROP COLUMN task_id;
DROP TABLE content.task_dependencies;
DROP TABLE content.tasks;
DROP TABLE content.workflows;
