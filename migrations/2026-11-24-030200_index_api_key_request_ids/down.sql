-- strata:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS auth.api_keys_user_request_id_key;
