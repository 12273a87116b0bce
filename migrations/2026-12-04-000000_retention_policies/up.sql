-- Retention of conversations: a user's policy for their conversations, and a project
-- owner's policy for their conversations of that project (which overrides their user-wide
-- one there). Archive after N days without activity (active_at), delete after M; NULL:
-- never. Applied in batches by the content service's `content.retention` task
-- (crates/content/src/retention.rs) through the conversations' (owner, ...) indexes.
CREATE TABLE content.retention_policies (
    owner_id           uuid NOT NULL,
    project_id         uuid REFERENCES content.projects (id) ON DELETE CASCADE,
    archive_after_days integer CHECK (archive_after_days BETWEEN 1 AND 36500),
    delete_after_days  integer CHECK (delete_after_days BETWEEN 1 AND 36500),
    updated_at         timestamptz NOT NULL,
    CHECK (archive_after_days IS NOT NULL OR delete_after_days IS NOT NULL)
);
CREATE UNIQUE INDEX retention_policies_user_key ON content.retention_policies (owner_id)
    WHERE project_id IS NULL;
CREATE UNIQUE INDEX retention_policies_project_key
    ON content.retention_policies (owner_id, project_id) WHERE project_id IS NOT NULL;

GRANT SELECT ON content.retention_policies TO strata_explain;
