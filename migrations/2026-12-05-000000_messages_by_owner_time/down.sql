DROP INDEX content.messages_owner_time_idx;
