DROP FUNCTION content.complete_tasks(uuid[], uuid[], uuid[], jsonb[], timestamptz);
DROP FUNCTION content.complete_task(uuid, uuid, uuid, jsonb, timestamptz);
