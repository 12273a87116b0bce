-- strata:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS auth.users_signup_request_id_key;
