-- Where a conversation's tree first branches: the lowest sequence of a message with two or
-- more children (0: it has two or more first messages; NULL: it is one chain). Messages 1
-- to fork_point form a chain every branch starts with, so an oldest-first page of any
-- branch reads that part straight from the primary key and walks the parents only beyond
-- it. Kept by appends (a child added to a message that has one), imports and forks.
ALTER TABLE content.conversations ADD COLUMN fork_point bigint;

UPDATE content.conversations c SET fork_point = f.s
FROM (
    SELECT conversation_id, min(s) AS s FROM (
        SELECT p.conversation_id, p.sequence AS s
        FROM content.messages p
        JOIN content.messages ch ON ch.conversation_id = p.conversation_id AND ch.parent_id = p.id
        GROUP BY p.conversation_id, p.sequence
        HAVING count(*) > 1
        UNION ALL
        SELECT conversation_id, 0 FROM content.messages WHERE parent_id IS NULL
        GROUP BY conversation_id HAVING count(*) > 1
    ) branched
    GROUP BY conversation_id
) f
WHERE c.id = f.conversation_id;
