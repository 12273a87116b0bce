DROP FUNCTION content.complete_task(uuid, uuid, uuid, jsonb, timestamptz);
