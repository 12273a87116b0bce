-- Going back cannot unseal (the database has no KEK): sealed keys become unusable to the
-- older service, which then creates a new signing key (tokens signed before expire).
DELETE FROM auth.signing_keys WHERE kek_id IS NOT NULL;
ALTER TABLE auth.signing_keys DROP COLUMN kek_id;
COMMENT ON COLUMN auth.signing_keys.private_key IS NULL;
