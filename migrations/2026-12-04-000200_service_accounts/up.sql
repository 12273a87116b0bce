-- Accounts made by `strata auth service-key` (crates/auth/src/service_accounts.rs): admins
-- nobody signs in to, whose API keys let one service call another. Only an account listed
-- here is ever reused by that command: an account someone signed up with the same email
-- is refused, never promoted.
CREATE TABLE auth.service_accounts (
    user_id    uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL
);
