ALTER TABLE auth.api_keys DROP COLUMN request_id;
ALTER TABLE auth.users DROP COLUMN signup_request_id;
