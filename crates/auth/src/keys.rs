//! Ed25519 signing keys: created on first start, rotatable, published as JWKS.
//!
//! The current key signs; retired keys stay published (and accepted) until every token
//! they signed has expired, i.e. for one access-token lifetime after retirement. A
//! partial unique index allows one current key, so replicas starting together create
//! exactly one. Private keys are stored sealed with the configured key-encryption key
//! ([`crate::kek`]); loading re-seals any key sealed with a previous one (or stored in
//! the clear) under the current one. Only the current key's private half is ever opened.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use jsonwebtoken::EncodingKey;
use rand::RngCore;
use strata_proto::strata::auth::v1::Jwk;
use strata_runtime::identity::PublicKeys;
use strata_storage::Db;

use crate::error::AuthError;
use crate::kek::KeyEncryption;
use crate::schema::signing_keys;

/// DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
struct KeyRow {
    kid: String,
    private_key: Vec<u8>,
    public_key: Vec<u8>,
    retired_at: Option<DateTime<Utc>>,
    kek_id: Option<String>,
}

/// The key that signs new tokens.
pub struct Signer {
    /// Key id, written into every token's header.
    pub kid: String,
    /// The private key.
    pub key: EncodingKey,
}

/// Every key the service knows: the signer, and the public keys tokens are checked with.
pub struct KeyRing {
    /// Signs new tokens.
    pub signer: Signer,
    /// Current and recently retired public keys.
    pub public: PublicKeys,
    /// The same keys as JWKS, current first.
    pub jwks: Vec<Jwk>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kid", &self.signer.kid)
            .field("public", &self.public)
            .finish()
    }
}

/// How often [`KeyRingCache`] reloads the signing keys from the database.
const KEY_RING_RELOAD: Duration = Duration::from_secs(60);

/// The key ring of a process: loaded (and the first key created) on first use, since the
/// schema may not be migrated when the handlers are built, then reloaded every minute so a
/// rotation by another replica is picked up well within a token lifetime (the retired key
/// stays valid meanwhile).
pub struct KeyRingCache {
    db: Db,
    access_ttl: Duration,
    sealing: KeyEncryption,
    slot: RwLock<Option<(Instant, Arc<KeyRing>)>>,
}

impl std::fmt::Debug for KeyRingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRingCache").finish_non_exhaustive()
    }
}

impl KeyRingCache {
    /// A cache loading from `db`, opening keys with `sealing`.
    pub fn new(db: Db, access_ttl: Duration, sealing: KeyEncryption) -> Self {
        Self {
            db,
            access_ttl,
            sealing,
            slot: RwLock::new(None),
        }
    }

    /// The current ring; on a failed reload the previous one is kept.
    pub async fn get(&self) -> Result<Arc<KeyRing>, AuthError> {
        let cached = self.slot.read().ok().and_then(|k| k.clone());
        if let Some((loaded, ring)) = &cached
            && loaded.elapsed() < KEY_RING_RELOAD
        {
            return Ok(Arc::clone(ring));
        }
        let loaded = async {
            let mut conn = self.db.get().await?;
            load_or_create(&mut conn, self.access_ttl, &self.sealing).await
        }
        .await;
        match (loaded, cached) {
            (Ok(ring), _) => Ok(self.store(ring)),
            (Err(e), Some((_, ring))) => {
                tracing::warn!(error = %e, "reloading signing keys failed; keeping the current ones");
                Ok(ring)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Retires the signing key and starts signing with a new one.
    pub async fn rotate(&self) -> Result<(), AuthError> {
        let mut conn = self.db.get().await?;
        let ring = rotate(&mut conn, self.access_ttl, &self.sealing).await?;
        self.store(ring);
        Ok(())
    }

    fn store(&self, ring: KeyRing) -> Arc<KeyRing> {
        let ring = Arc::new(ring);
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some((Instant::now(), Arc::clone(&ring)));
        }
        ring
    }
}

/// A signer for the Ed25519 key with this 32-byte seed.
pub fn signer_from_seed(kid: &str, seed: &[u8]) -> Signer {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed);
    Signer {
        kid: kid.to_owned(),
        key: EncodingKey::from_ed_der(&der),
    }
}

fn new_key_row() -> (String, [u8; 32], [u8; 32]) {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    (uuid::Uuid::now_v7().simple().to_string(), seed, public)
}

/// Loads the key ring, creating the first key if there is none. Keys retired more than
/// `access_ttl` ago are no longer published.
pub async fn load_or_create(
    conn: &mut AsyncPgConnection,
    access_ttl: std::time::Duration,
    sealing: &KeyEncryption,
) -> Result<KeyRing, AuthError> {
    let (kid, seed, public) = new_key_row();
    // Does nothing when a current key exists (the partial unique index on retired_at).
    diesel::sql_query(
        "INSERT INTO auth.signing_keys (kid, private_key, public_key, kek_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind::<diesel::sql_types::Text, _>(&kid)
    .bind::<diesel::sql_types::Bytea, _>(sealing.seal(&kid, &seed)?)
    .bind::<diesel::sql_types::Bytea, _>(&public[..])
    .bind::<diesel::sql_types::Text, _>(sealing.current().id())
    .execute(conn)
    .await?;
    // A current key stored in the clear (from before sealing) has been readable in every
    // copy and backup of the database: it stops signing now. Sealing it would not undo
    // that.
    let clear: i64 = signing_keys::table
        .filter(
            signing_keys::retired_at
                .is_null()
                .and(signing_keys::kek_id.is_null()),
        )
        .count()
        .get_result(conn)
        .await?;
    if clear > 0 {
        tracing::warn!("the current signing key was stored in the clear: rotating it");
        return rotate(conn, access_ttl, sealing).await;
    }
    load(conn, access_ttl, sealing).await
}

/// Retires the current key and creates a new one, atomically.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    access_ttl: std::time::Duration,
    sealing: &KeyEncryption,
) -> Result<KeyRing, AuthError> {
    conn.transaction(async |conn| {
        // A configuration that cannot open the current key (a missing or wrong KEK) must
        // not replace it with one sealed under a KEK the running replicas do not know.
        let current: Option<KeyRow> = signing_keys::table
            .filter(signing_keys::retired_at.is_null())
            .select(KeyRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        if let Some(current) = current {
            sealing.open(
                &current.kid,
                current.kek_id.as_deref(),
                &current.private_key,
            )?;
        }
        diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
            .set(signing_keys::retired_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        let (kid, seed, public) = new_key_row();
        diesel::insert_into(signing_keys::table)
            .values((
                signing_keys::kid.eq(&kid),
                signing_keys::private_key.eq(sealing.seal(&kid, &seed)?),
                signing_keys::public_key.eq(&public[..]),
                signing_keys::kek_id.eq(sealing.current().id()),
            ))
            .execute(conn)
            .await?;
        Ok::<_, AuthError>(())
    })
    .await?;
    load(conn, access_ttl, sealing).await
}

/// Seals again, under the current KEK, every key that another KEK sealed (or none did);
/// returns how many. Keys that open with no configured KEK are left as they are.
pub async fn reseal(
    conn: &mut AsyncPgConnection,
    sealing: &KeyEncryption,
) -> Result<usize, AuthError> {
    let current = sealing.current().id();
    let rows: Vec<KeyRow> = signing_keys::table
        .filter(
            signing_keys::kek_id
                .is_null()
                .or(signing_keys::kek_id.ne(current)),
        )
        .select(KeyRow::as_select())
        .load(conn)
        .await?;
    let mut resealed = 0;
    for row in rows {
        let seed = match sealing.open(&row.kid, row.kek_id.as_deref(), &row.private_key) {
            Ok(seed) => seed,
            Err(e) => {
                tracing::warn!(signing_key.kid = %row.kid, error = %e, "cannot re-seal a signing key");
                continue;
            }
        };
        // Only if nobody re-sealed it meanwhile (another replica, the same KEK).
        resealed += diesel::update(
            signing_keys::table
                .find(&row.kid)
                .filter(signing_keys::kek_id.is_not_distinct_from(row.kek_id.as_deref())),
        )
        .set((
            signing_keys::private_key.eq(sealing.seal(&row.kid, &seed)?),
            signing_keys::kek_id.eq(current),
        ))
        .execute(conn)
        .await?;
    }
    if resealed > 0 {
        tracing::info!(
            signing_keys.resealed = resealed,
            kek.id = current,
            "sealed signing keys under the current key-encryption key"
        );
    }
    Ok(resealed)
}

async fn load(
    conn: &mut AsyncPgConnection,
    access_ttl: std::time::Duration,
    sealing: &KeyEncryption,
) -> Result<KeyRing, AuthError> {
    let oldest_valid = Utc::now() - chrono::Duration::from_std(access_ttl).unwrap_or_default();
    let rows: Vec<KeyRow> = signing_keys::table
        .filter(
            signing_keys::retired_at
                .is_null()
                .or(signing_keys::retired_at.gt(oldest_valid)),
        )
        .order((
            signing_keys::retired_at.desc().nulls_first(),
            signing_keys::created_at.desc(),
        ))
        .select(KeyRow::as_select())
        .load(conn)
        .await?;
    if rows
        .iter()
        .any(|r| r.kek_id.as_deref() != Some(sealing.current().id()))
    {
        reseal(conn, sealing).await?;
    }
    let current = rows
        .iter()
        .find(|r| r.retired_at.is_none())
        .ok_or_else(|| AuthError::Signing("no current signing key".into()))?;
    let seed = sealing.open(
        &current.kid,
        current.kek_id.as_deref(),
        &current.private_key,
    )?;
    let mut public = PublicKeys::default();
    let mut jwks = Vec::new();
    for row in &rows {
        public.insert(row.kid.clone(), &row.public_key);
        jwks.push(Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(&row.public_key),
            kid: row.kid.clone(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        });
    }
    Ok(KeyRing {
        signer: signer_from_seed(&current.kid, &seed),
        public,
        jwks,
    })
}
