//! Local verification of access tokens ([`verify_access_token`]).
//!
//! Access tokens are JWTs signed with Ed25519 by the auth service: header `alg: EdDSA`,
//! `typ: at+jwt`, `kid` naming the signing key; claims `iss`, `aud`, `sub` (user id),
//! `sid` (session id), `role`, `iat`, `nbf`, `exp`, `jti`. Verification accepts nothing
//! else: no other algorithm (`none` included), no unknown `kid`, no `jku`/`x5u`/`jwk`/`x5c`
//! header (keys only ever come from the auth service's JWKS), no other `typ` (so refresh
//! tokens and API keys are refused as access tokens), and only unexpired tokens of the
//! configured issuer and audience.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use super::Role;

/// `typ` header of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// First characters of every API key.
pub const API_KEY_PREFIX: &str = "sk_";
/// First characters of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "rt_";

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Role at issue time.
    pub role: Role,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

/// Who issues tokens and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// How long a verifier of another service reuses a revocation answer or a remote
    /// verification (one second; tests set zero to see every revocation at once).
    pub cache_ttl: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "strata-auth".into(),
            audience: "strata".into(),
            leeway: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(1),
        }
    }
}

/// Public keys by `kid`.
#[derive(Clone, Default)]
pub struct PublicKeys {
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

impl PublicKeys {
    /// Adds the raw 32-byte Ed25519 public key `public_key` under `kid`.
    pub fn insert(&mut self, kid: impl Into<String>, public_key: &[u8]) {
        self.keys
            .insert(kid.into(), DecodingKey::from_ed_der(public_key));
    }

    /// The Ed25519 keys of a JWKS (`GetJwks`); other kinds and undecodable keys are left out.
    pub fn from_jwks(jwks: impl IntoIterator<Item = strata_proto::auth::Jwk>) -> Self {
        use base64::Engine as _;
        let mut keys = Self::default();
        for jwk in jwks {
            if jwk.kty == "OKP"
                && jwk.crv == "Ed25519"
                && let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&jwk.x)
            {
                keys.insert(jwk.kid, &raw);
            }
        }
        keys
    }

    /// Whether `kid` is known.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a token was refused. Callers answer `UNAUTHENTICATED` for all of them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or claims of the wrong shape.
    #[error("malformed token")]
    Malformed,
    /// Signed with anything but EdDSA (or `none`).
    #[error("unsupported algorithm")]
    Algorithm,
    /// Carries a key-location header (`jku`, `x5u`, `jwk`, `x5c`).
    #[error("forbidden header")]
    ForbiddenHeader,
    /// Not an access token (`typ` is not `at+jwt`, or a refresh token or API key).
    #[error("not an access token")]
    WrongType,
    /// `kid` missing or not among the published keys.
    #[error("unknown signing key")]
    UnknownKey,
    /// Signature does not verify.
    #[error("invalid signature")]
    Signature,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf`.
    #[error("token not yet valid")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("wrong issuer")]
    Issuer,
    /// Wrong `aud`.
    #[error("wrong audience")]
    Audience,
}

/// Access tokens already verified, so a token presented again costs a SHA-256 and a map
/// lookup instead of an Ed25519 signature check and a JSON decode (the costly part of every
/// authenticated call). An entry holds the principal the token names; it is used only while
/// the token is unexpired (with the leeway) and for at most `max_age`, so a key withdrawn
/// from the JWKS stops being honoured within that time. Revocation is not cached here:
/// callers check the session on every call.
pub struct VerifiedTokens {
    cache: moka::sync::Cache<[u8; 32], super::Principal>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens, each kept at most `max_age`.
    pub fn new(capacity: u64, max_age: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_age)
                .build(),
        }
    }

    /// The principal of `token`: from the cache when it was verified before and has not
    /// expired, else verified against `keys` (see [`verify_access_token`]) and remembered.
    pub fn verify(
        &self,
        token: &str,
        keys: &PublicKeys,
        settings: &TokenSettings,
    ) -> Result<super::Principal, TokenError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, keys, settings, now)
    }

    /// [`VerifiedTokens::verify`] at `now` (seconds since the epoch) for remembered tokens;
    /// a token verified afresh is checked against the system clock, as always.
    pub fn verify_at(
        &self,
        token: &str,
        keys: &PublicKeys,
        settings: &TokenSettings,
        now: u64,
    ) -> Result<super::Principal, TokenError> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.cache.get(&digest) {
            let expires = principal
                .expires_at
                .and_then(|e| u64::try_from(e).ok())
                .unwrap_or(0);
            if now <= expires.saturating_add(settings.leeway.as_secs()) {
                return Ok(principal);
            }
            self.cache.invalidate(&digest);
            return Err(TokenError::Expired);
        }
        let claims = verify_access_token(token, keys, settings)?;
        let principal = super::Principal::from_claims(&claims)?;
        self.cache.insert(digest, principal.clone());
        Ok(principal)
    }
}

/// Verifies an access token against `keys`; see the module docs for what is refused.
pub fn verify_access_token(
    token: &str,
    keys: &PublicKeys,
    settings: &TokenSettings,
) -> Result<AccessClaims, TokenError> {
    if token.starts_with(API_KEY_PREFIX) || token.starts_with(REFRESH_TOKEN_PREFIX) {
        return Err(TokenError::WrongType);
    }
    let header = decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        _ => TokenError::Malformed,
    })?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Algorithm);
    }
    if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some()
    {
        return Err(TokenError::ForbiddenHeader);
    }
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err(TokenError::WrongType);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.keys.get(kid))
        .ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&[&settings.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = settings.leeway.as_secs();
    decode::<AccessClaims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};

    use super::*;

    /// DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows it.
    const PKCS8_ED25519_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];

    fn token(seed: [u8; 32], exp: i64) -> String {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = Some("k1".into());
        let now = chrono::Utc::now().timestamp() - 10;
        let claims = AccessClaims {
            iss: "strata-auth".into(),
            aud: "strata".into(),
            sub: uuid::Uuid::now_v7().to_string(),
            sid: uuid::Uuid::now_v7().to_string(),
            role: Role::User,
            iat: now,
            nbf: now,
            exp,
            jti: "j".into(),
        };
        encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap()
    }

    #[test]
    fn remembered_tokens_still_expire_and_forgeries_are_never_remembered() {
        let seed = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let mut keys = PublicKeys::default();
        keys.insert("k1", &public);
        let settings = TokenSettings {
            leeway: Duration::ZERO,
            ..TokenSettings::default()
        };
        let verified = VerifiedTokens::new(100, Duration::from_secs(60));
        let now = chrono::Utc::now().timestamp();

        let live = token(seed, now + 600);
        let first = verified.verify(&live, &keys, &settings).unwrap();
        // Remembered: verified again without the keys.
        let again = verified
            .verify(&live, &PublicKeys::default(), &settings)
            .unwrap();
        assert_eq!(first, again);

        // A token remembered while valid is refused once past its expiry.
        let exp = u64::try_from(now + 600).unwrap();
        assert!(verified.verify_at(&live, &keys, &settings, exp).is_ok());
        assert_eq!(
            verified.verify_at(&live, &keys, &settings, exp + 1),
            Err(TokenError::Expired)
        );

        // A forgery fails and is not remembered: it fails again with the right keys too.
        let forged = token([8u8; 32], now + 600);
        assert!(verified.verify(&forged, &keys, &settings).is_err());
        assert!(verified.verify(&forged, &keys, &settings).is_err());
    }
}
