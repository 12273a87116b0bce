//! Encryption at rest of the signing keys' private material, with a key-encryption key
//! (KEK) from the configuration, so a copy of the database alone cannot mint tokens.
//!
//! Each private key (a 32-byte Ed25519 seed) is sealed with XChaCha20-Poly1305 under the
//! current KEK: a random 24-byte nonce, then the ciphertext and tag, authenticated
//! together with the key's `kid` (a sealed key moved to another row does not open). The
//! row records which KEK sealed it (`kek_id`, a fingerprint of the KEK, never the KEK).
//!
//! Rotation: configure the new KEK as current and the old one as previous; every key the
//! service loads that is sealed with a previous KEK (or stored in the clear, from before
//! encryption) is opened and sealed again with the current one. Once every replica runs
//! with the new KEK, the old one can be dropped from the configuration.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use strata_runtime::config::Secret;

use crate::error::AuthError;

/// Bytes of a KEK.
pub const KEK_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Stored length of a sealed 32-byte seed: nonce, ciphertext, tag.
pub const SEALED_LEN: usize = NONCE_LEN + 32 + 16;

/// One key-encryption key and its fingerprint.
#[derive(Clone)]
pub struct Kek {
    id: String,
    key: Secret<[u8; KEK_LEN]>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// The KEK of 32 raw bytes.
    pub fn new(key: [u8; KEK_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"strata signing-key KEK id\0")
            .chain_update(key)
            .finalize();
        Self {
            id: hex::encode(&digest[..8]),
            key: Secret::new(key),
        }
    }

    /// Parses the base64 (standard or URL-safe, padded or not) of 32 bytes; the error says
    /// what is wrong without repeating the value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or("must be base64 (e.g. the output of `head -c 32 /dev/urandom | base64`)")?;
        let key: [u8; KEK_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("must decode to 32 bytes, not {}", b.len()))?;
        Ok(Self::new(key))
    }

    /// The fingerprint stored beside what this KEK sealed.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.expose().into())
    }
}

/// The KEKs a process knows: the current one seals, the previous ones only open.
#[derive(Debug, Clone)]
pub struct KeyEncryption {
    current: Kek,
    previous: Vec<Kek>,
}

fn aad(kid: &str) -> Vec<u8> {
    [b"strata signing key v1\0".as_slice(), kid.as_bytes()].concat()
}

impl KeyEncryption {
    /// Sealing with `current`, opening with it or any of `previous`.
    pub fn new(current: Kek, previous: Vec<Kek>) -> Self {
        Self { current, previous }
    }

    /// The KEK that seals.
    pub fn current(&self) -> &Kek {
        &self.current
    }

    /// Seals `seed`, the private key of `kid`.
    pub fn seal(&self, kid: &str, seed: &[u8; 32]) -> Result<Vec<u8>, AuthError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: seed,
                    aad: &aad(kid),
                },
            )
            .map_err(|_| AuthError::Signing("sealing a signing key failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Opens the private key of `kid`, sealed under the KEK `kek_id` (`None`: stored in
    /// the clear, from before encryption at rest).
    pub fn open(
        &self,
        kid: &str,
        kek_id: Option<&str>,
        stored: &[u8],
    ) -> Result<[u8; 32], AuthError> {
        let Some(kek_id) = kek_id else {
            return stored
                .try_into()
                .map_err(|_| AuthError::Signing(format!("signing key {kid} is malformed")));
        };
        let kek = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == kek_id)
            .ok_or_else(|| {
                AuthError::Signing(format!(
                    "signing key {kid} is sealed with an unknown key-encryption key ({kek_id}); \
                     configure it in STRATA_AUTH_KEY_ENCRYPTION_KEY or \
                     STRATA_AUTH_PREVIOUS_KEY_ENCRYPTION_KEYS"
                ))
            })?;
        if stored.len() != SEALED_LEN {
            return Err(AuthError::Signing(format!(
                "signing key {kid} is malformed"
            )));
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let seed = kek
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad(kid),
                },
            )
            .map_err(|_| {
                AuthError::Signing(format!(
                    "signing key {kid} does not open with key-encryption key {kek_id}"
                ))
            })?;
        seed.try_into()
            .map_err(|_| AuthError::Signing(format!("signing key {kid} is malformed")))
    }
}

/// The built-in development KEK: a well-known value, so not a secret. It seals only when
/// `STRATA_ENV=development` is set explicitly and no KEK is configured (`make run` always
/// configures one); outside production it is also accepted as a previous KEK, so that
/// configuring a real one re-seals what it sealed. Production never accepts it.
pub fn development_kek() -> Kek {
    Kek::new(*b"strata development KEK: NOT SAFE")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::new([byte; 32])
    }

    #[test]
    fn seals_open_only_with_their_kek_and_kid() {
        let a = KeyEncryption::new(kek(1), vec![]);
        let seed = [7u8; 32];
        let sealed = a.seal("kid1", &seed).unwrap();
        assert_eq!(sealed.len(), SEALED_LEN);
        assert!(!sealed.windows(32).any(|w| w == seed));
        assert_eq!(
            a.open("kid1", Some(a.current().id()), &sealed).unwrap(),
            seed
        );
        assert!(
            a.open("kid2", Some(a.current().id()), &sealed).is_err(),
            "bound to kid"
        );
        let b = KeyEncryption::new(kek(2), vec![]);
        assert!(
            b.open("kid1", Some(kek(1).id()), &sealed).is_err(),
            "unknown KEK"
        );
        let rotated = KeyEncryption::new(kek(2), vec![kek(1)]);
        assert_eq!(
            rotated.open("kid1", Some(kek(1).id()), &sealed).unwrap(),
            seed
        );
        // A forged id does not open it with the wrong key.
        assert!(b.open("kid1", Some(kek(2).id()), &sealed).is_err());
        // Legacy rows in the clear.
        assert_eq!(a.open("old", None, &seed).unwrap(), seed);
    }

    #[test]
    fn keks_parse_from_base64_and_errors_never_echo_them() {
        let text = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(Kek::parse(&text).unwrap().id(), kek(9).id());
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        assert_eq!(Kek::parse(&url).unwrap().id(), kek(9).id());
        let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
        let err = Kek::parse(&short).unwrap_err();
        assert!(err.contains("32 bytes") && !err.contains(&short));
        assert!(Kek::parse("not base64!").is_err());
        assert!(!format!("{:?}", kek(9)).contains("9, 9"));
    }
}
