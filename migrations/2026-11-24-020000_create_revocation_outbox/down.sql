DROP TRIGGER IF EXISTS sessions_enqueue_revocation ON auth.sessions;
DROP FUNCTION IF EXISTS auth.enqueue_revocation();
DROP TABLE IF EXISTS auth.revocation_outbox;
