-- SearchMessages ranks at most the newest 1,000 matches of a search. A common word is found
-- by walking the owner's messages newest first (this index) until a thousand match; a rare
-- one through the words' GIN index. The planner picks between them from the words'
-- statistics, so no search reads tens of thousands of rows to rank them all.
CREATE INDEX messages_owner_time_idx ON content.messages (owner_id, created_at, id);
