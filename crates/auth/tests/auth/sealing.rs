//! Signing keys at rest: sealed with the key-encryption key, useless without it, and
//! carried across a KEK rotation.

use strata_auth::kek::{Kek, KeyEncryption};

use super::*;

/// A server on `db` whose auth service seals with `sealing`.
async fn start_sealed(db: TestDb, sealing: KeyEncryption) -> Harness {
    let config = db.server_config("auth");
    let auth = AuthConfig {
        key_encryption: sealing,
        ..AuthConfig::default()
    };
    start_with(db, config, auth, Arc::new(SystemClock)).await
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    kid: String,
    #[diesel(sql_type = Bytea)]
    private_key: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    public_key: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    kek_id: Option<String>,
}

async fn key_rows(db: &TestDb) -> Vec<KeyRow> {
    diesel::sql_query(
        "SELECT kid, private_key, public_key, kek_id FROM auth.signing_keys ORDER BY created_at",
    )
    .load(&mut db.connect().await)
    .await
    .unwrap()
}

/// Whether anything in `stored` is the seed of `public`: what someone holding a copy of
/// the database would need to sign tokens.
fn holds_the_seed(stored: &[u8], public: &[u8]) -> bool {
    stored.windows(32).any(|window| {
        let seed: [u8; 32] = window.try_into().unwrap();
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes()
            == public
    })
}

fn kek(byte: u8) -> Kek {
    Kek::new([byte; 32])
}

async fn profile(h: &mut Harness, token: &str) -> Result<pb::User, tonic::Status> {
    h.client
        .get_profile(bearer(pb::GetProfileRequest::default(), token))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

#[tokio::test]
async fn signing_keys_are_sealed_and_survive_a_kek_rotation() {
    let (a, b) = (kek(0xaa), kek(0xbb));
    let mut h = start_sealed(TestDb::new().await, KeyEncryption::new(a.clone(), vec![])).await;
    let (_, first) = sign_up(&mut h.client, "ada@example.com").await;
    let rows = key_rows(&h.db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kek_id.as_deref(), Some(a.id()));
    assert!(
        !holds_the_seed(&rows[0].private_key, &rows[0].public_key),
        "a copy of the database alone cannot sign"
    );
    let Harness { db, _server, .. } = h;
    drop(_server);

    // Another KEK alone cannot open it: signing fails, closed, without saying more.
    let mut h = start_sealed(db, KeyEncryption::new(b.clone(), vec![])).await;
    let status = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "internal error");
    let Harness { db, _server, .. } = h;
    drop(_server);

    // Rotation: B current, A previous. Old tokens verify, new ones are signed, and the key
    // is sealed again under B.
    let mut h = start_sealed(db, KeyEncryption::new(b.clone(), vec![a.clone()])).await;
    profile(&mut h, &first.access_token).await.unwrap();
    let second = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap();
    let rows = key_rows(&h.db).await;
    assert!(rows.iter().all(|r| r.kek_id.as_deref() == Some(b.id())));
    assert!(
        rows.iter()
            .all(|r| !holds_the_seed(&r.private_key, &r.public_key))
    );
    let Harness { db, _server, .. } = h;
    drop(_server);

    // A gone from the configuration: nothing needs it any more.
    let mut h = start_sealed(db, KeyEncryption::new(b.clone(), vec![])).await;
    profile(&mut h, &second.access_token).await.unwrap();
    login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap();
}

/// A key found in the clear (from before sealing) was readable in every copy of the
/// database: it is retired at once (still verifying what it signed) and sealed.
/// A key found in the clear (from before sealing) was readable in every copy of the
/// database: it is retired at once (still verifying what it signed) and sealed.
#[tokio::test]
async fn keys_stored_in_the_clear_before_sealing_are_retired_and_sealed() {
    let db = TestDb::new().await;
    let seed = [0x42u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    diesel::sql_query(
        "INSERT INTO auth.signing_keys (kid, private_key, public_key) VALUES ('legacy', $1, $2)",
    )
    .bind::<Bytea, _>(&seed[..])
    .bind::<Bytea, _>(&public[..])
    .execute(&mut db.connect().await)
    .await
    .unwrap();
    let a = kek(0xaa);
    let mut h = start_sealed(db, KeyEncryption::new(a.clone(), vec![])).await;
    let (_, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let header = jsonwebtoken::decode_header(&credentials.access_token).unwrap();
    assert_ne!(header.kid.as_deref(), Some("legacy"), "a new key signs");
    let rows = key_rows(&h.db).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].kid, "legacy");
    assert!(rows.iter().all(|r| r.kek_id.as_deref() == Some(a.id())));
    assert!(
        rows.iter()
            .all(|r| !holds_the_seed(&r.private_key, &r.public_key))
    );
    let jwks = h
        .client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(
        jwks.iter().any(|k| k.kid == "legacy"),
        "the retired key still verifies what it signed"
    );
}

/// Rotating with a configuration that cannot open the current key (no KEK, or another
/// one) is refused: it would leave running replicas a key they cannot open.
#[tokio::test]
async fn rotation_needs_the_key_encryption_key_of_the_current_key() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let ttl = AuthConfig::default().access_ttl;
    let real = KeyEncryption::new(kek(0xaa), vec![]);
    strata_auth::keys::load_or_create(&mut conn, ttl, &real)
        .await
        .unwrap();
    let other = KeyEncryption::new(kek(0xcc), vec![]);
    assert!(
        strata_auth::keys::rotate(&mut conn, ttl, &other)
            .await
            .is_err()
    );
    let rows = key_rows(&db).await;
    assert_eq!(rows.len(), 1, "nothing retired, nothing created");
    assert_eq!(rows[0].kek_id.as_deref(), Some(real.current().id()));
    strata_auth::keys::rotate(&mut conn, ttl, &real)
        .await
        .unwrap();
    assert_eq!(key_rows(&db).await.len(), 2);
}
