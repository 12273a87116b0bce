-- strata:no-transaction
-- A sign-up request id names at most one account.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_signup_request_id_key
    ON auth.users (signup_request_id) WHERE signup_request_id IS NOT NULL;
