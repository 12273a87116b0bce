-- Revocations waiting to be published to Redis. A trigger fills it in the same
-- transaction as the revocation itself, whichever code path (or operator) ends the session,
-- and the auth service deletes a row only after Redis acknowledged the revocation (see
-- crates/auth/src/revocations.rs). A revocation that could not be published is therefore
-- retried from here until it is; Redis is never its only record.
CREATE TABLE auth.revocation_outbox (
    session_id uuid PRIMARY KEY,
    revoked_at timestamptz NOT NULL
);

CREATE FUNCTION auth.enqueue_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO auth.revocation_outbox (session_id, revoked_at)
    VALUES (NEW.id, NEW.revoked_at)
    ON CONFLICT (session_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_enqueue_revocation
    AFTER UPDATE OF revoked_at ON auth.sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION auth.enqueue_revocation();

-- Nothing secret in it: operators may explain queries over it.
GRANT SELECT ON auth.revocation_outbox TO strata_explain;
