-- Idempotency keys of SignUp and CreateApiKey (AIP-155). Nullable columns without a
-- default: adding them rewrites nothing and locks only for an instant. Their unique
-- indexes are built concurrently by the next two migrations.
ALTER TABLE auth.users ADD COLUMN signup_request_id uuid;
ALTER TABLE auth.api_keys ADD COLUMN request_id uuid;
