-- Accounts, sessions, refresh tokens, API keys and signing keys of the auth service.
-- Secrets are never stored: refresh tokens and API keys as SHA-256, passwords as argon2id
-- PHC strings (parameters included).

CREATE TABLE auth.users (
    id                  uuid PRIMARY KEY,                 -- UUIDv7: time-ordered, keyset-friendly
    email               text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash       text NOT NULL,
    display_name        text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    avatar_url          text NOT NULL DEFAULT '',
    bio                 text NOT NULL DEFAULT '',
    locale              text NOT NULL DEFAULT '',
    time_zone           text NOT NULL DEFAULT '',
    role                text NOT NULL DEFAULT 'USER' CHECK (role IN ('USER', 'ADMIN')),
    status              text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'DISABLED')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
-- Login looks up lower(email) = $1; admin search uses lower(email) LIKE 'prefix%'.
-- text_pattern_ops lets the one unique index serve both.
CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email) text_pattern_ops);
-- ListUsers filtered by role, keyset on id.
CREATE INDEX users_role_id_idx ON auth.users (role, id);

CREATE TABLE auth.sessions (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    idle_expires_at     timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    revoked_at          timestamptz,
    user_agent          text NOT NULL DEFAULT '',
    ip_address          text NOT NULL DEFAULT ''
);
-- ListSessions / LogoutAll / ChangePassword: a user's live sessions, newest first.
CREATE INDEX sessions_active_user_idx ON auth.sessions (user_id, created_at DESC, id)
    WHERE revoked_at IS NULL;
-- Cleanup scan: expired sessions. The idle expiry never exceeds the absolute one (both
-- are set so), so it is the effective expiry.
CREATE INDEX sessions_expiry_idx ON auth.sessions (idle_expires_at);
-- Cleanup scan: revoked sessions.
CREATE INDEX sessions_revoked_idx ON auth.sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE auth.refresh_tokens (
    id          uuid PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,                            -- every rotation of one sign-in
    token_hash  bytea NOT NULL CHECK (length(token_hash) = 32),
    parent_id   uuid REFERENCES auth.refresh_tokens (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
-- RefreshToken looks a token up by its hash.
CREATE UNIQUE INDEX refresh_tokens_hash_key ON auth.refresh_tokens (token_hash);
-- Reuse detection and logout revoke a family's live tokens.
CREATE INDEX refresh_tokens_family_idx ON auth.refresh_tokens (family_id) WHERE revoked_at IS NULL;
-- Logout revokes a session's live tokens.
CREATE INDEX refresh_tokens_session_idx ON auth.refresh_tokens (session_id);
-- Cleanup scan.
CREATE INDEX refresh_tokens_expiry_idx ON auth.refresh_tokens (expires_at);

CREATE TABLE auth.api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
-- Every authenticated call with an API key looks it up by hash.
CREATE UNIQUE INDEX api_keys_hash_key ON auth.api_keys (key_hash);
-- ListApiKeys: a user's keys, newest first.
CREATE INDEX api_keys_user_idx ON auth.api_keys (user_id, created_at DESC, id);

CREATE TABLE auth.signing_keys (
    kid         text PRIMARY KEY,
    private_key bytea NOT NULL,                           -- Ed25519 seed (32 bytes)
    public_key  bytea NOT NULL,                           -- Ed25519 public key (32 bytes)
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
-- At most one current key: replicas starting together cannot create two.
CREATE UNIQUE INDEX signing_keys_current_key ON auth.signing_keys ((true)) WHERE retired_at IS NULL;
