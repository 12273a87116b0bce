-- strata:no-transaction
-- A request id names at most one key of its user (ids of other users never collide with
-- the caller's, so a replay never reveals another user's key).
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS api_keys_user_request_id_key
    ON auth.api_keys (user_id, request_id) WHERE request_id IS NOT NULL;
