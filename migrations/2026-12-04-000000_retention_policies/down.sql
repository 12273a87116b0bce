DROP TABLE content.retention_policies;
