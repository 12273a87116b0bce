-- The number of files of each project, kept by the statements that add, delete and copy
-- files, on the project row they lock. The file limit was checked against a count(*) read
-- with the statement's snapshot: two batches at once each saw the other's files missing
-- and together could pass the limit. The locked row's count is always the latest.
ALTER TABLE content.projects
    ADD COLUMN file_count bigint NOT NULL DEFAULT 0 CHECK (file_count >= 0);
UPDATE content.projects p SET file_count = f.n
FROM (SELECT project_id, count(*) AS n FROM content.project_files GROUP BY project_id) f
WHERE f.project_id = p.id;
