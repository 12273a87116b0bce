-- Signing keys' private material is sealed at rest with a key-encryption key from the
-- configuration (see crates/auth/src/kek.rs). kek_id names the KEK that sealed a row;
-- NULL marks a key stored in the clear before this migration, which the service seals
-- the next time it loads its keys.
ALTER TABLE auth.signing_keys ADD COLUMN kek_id text;
COMMENT ON COLUMN auth.signing_keys.private_key IS
    'Ed25519 seed sealed with XChaCha20-Poly1305 under the KEK kek_id (nonce || ciphertext || tag); in the clear only while kek_id is NULL';
