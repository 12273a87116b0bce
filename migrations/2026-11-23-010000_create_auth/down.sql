DROP TABLE IF EXISTS auth.signing_keys;
DROP TABLE IF EXISTS auth.api_keys;
DROP TABLE IF EXISTS auth.refresh_tokens;
DROP TABLE IF EXISTS auth.sessions;
DROP TABLE IF EXISTS auth.users;
