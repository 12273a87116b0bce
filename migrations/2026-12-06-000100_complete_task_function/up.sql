-- CompleteTask is the queue's hottest write: one call per task. As a function its three
-- statements are planned once per connection (PL/pgSQL caches their plans) instead of at
-- every call, which is most of a raw statement's cost.
--
-- Completes task p_id of p_owner held by lease p_lease with p_output: the task SUCCEEDED,
-- its dependants waiting on nothing else become READY (their queues are notified at
-- commit), and its workflow's counters and status follow. Locks: the task, then its
-- dependants in id order, then the workflow. Returns the task, or nothing when it is not
-- RUNNING under that lease.
CREATE FUNCTION content.complete_task(
    p_id uuid, p_owner uuid, p_lease uuid, p_output jsonb, p_now timestamptz
) RETURNS SETOF content.tasks LANGUAGE plpgsql AS $$
DECLARE
    done content.tasks;
    freed record;
BEGIN
    UPDATE content.tasks t
       SET status = 4, output = p_output, finished_at = p_now, lease_expires_at = NULL,
           updated_at = p_now
     WHERE t.id = p_id AND t.owner_id = p_owner AND t.lease_id = p_lease AND t.status = 3
    RETURNING t.* INTO done;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR freed IN
        WITH dependants AS (
            SELECT t.id FROM content.task_dependencies d
            JOIN content.tasks t ON t.id = d.task_id
            WHERE d.depends_on = p_id AND t.status = 1
            ORDER BY t.id FOR UPDATE OF t
        ), made_ready AS (
            UPDATE content.tasks t
               SET waiting_on = t.waiting_on - 1,
                   status = CASE WHEN t.waiting_on = 1 THEN 2 ELSE t.status END,
                   ready_at = CASE WHEN t.waiting_on = 1 THEN p_now ELSE t.ready_at END,
                   updated_at = p_now
              FROM dependants WHERE t.id = dependants.id AND t.status = 1
            RETURNING t.queue, t.status
        )
        SELECT DISTINCT queue FROM made_ready WHERE status = 2
    LOOP
        PERFORM pg_notify('content_tasks', p_owner::text || '/' || freed.queue);
    END LOOP;
    UPDATE content.workflows w
       SET succeeded = w.succeeded + 1,
           remaining = w.remaining - 1,
           status = CASE WHEN w.remaining = 1
                         THEN CASE WHEN w.failed = 0 THEN 3 ELSE 4 END
                         ELSE w.status END,
           finished_at = CASE WHEN w.remaining = 1 THEN p_now ELSE w.finished_at END,
           updated_at = p_now
     WHERE w.id = done.workflow_id AND w.status IN (1, 2);
    RETURN NEXT done;
END
$$;

-- Completions of many tasks in one transaction (the server gathers concurrent CompleteTask
-- calls and commits them together, answering each after the commit), in the order given.
CREATE FUNCTION content.complete_tasks(
    p_ids uuid[], p_owners uuid[], p_leases uuid[], p_outputs jsonb[], p_now timestamptz
) RETURNS SETOF content.tasks LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        RETURN QUERY
            SELECT * FROM content.complete_task(p_ids[i], p_owners[i], p_leases[i], p_outputs[i], p_now);
    END LOOP;
END
$$;
