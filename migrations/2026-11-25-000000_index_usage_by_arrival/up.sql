-- Real-time reads add one user's (or project's) rows received after a summary's
-- watermark. They used to find them in two parts: on-time rows through the occurrence-time
-- index, over the two hours before the watermark (every row of those hours is read to keep
-- the few received after it), and late rows through partial indexes. Under steady ingest
-- those two hours hold thousands of a heavy user's rows for a tail of a few dozen, and a
-- summary read cost what the last two hours held rather than what arrived since the last
-- fold. An index by arrival makes the tail one range scan of exactly its rows, whatever
-- the rows' occurrence times, so the late flag and its partial indexes have no reader left.
--
-- Rows arrive in received_at order, so each user's (and project's) entries are appended
-- at the right edge of its range: the index costs an insert about what the occurrence-time
-- index costs.
-- Dropped first, so the partitions' new indexes take the names the partial ones had.
DROP INDEX analytics.token_usage_late_user_idx;
DROP INDEX analytics.token_usage_late_project_idx;
ALTER TABLE analytics.token_usage DROP COLUMN late;

CREATE INDEX token_usage_user_received_idx
    ON analytics.token_usage (user_id, received_at);
CREATE INDEX token_usage_project_received_idx
    ON analytics.token_usage (project_id, received_at) WHERE project_id IS NOT NULL;

