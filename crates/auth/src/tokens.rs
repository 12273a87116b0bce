//! Issuing access tokens (signed JWTs) and refresh tokens (opaque, stored hashed).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header};
use rand::RngCore;
use sha2::{Digest, Sha256};
use strata_runtime::identity::{ACCESS_TOKEN_TYPE, AccessClaims, REFRESH_TOKEN_PREFIX, Role};
use uuid::Uuid;

use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::keys::Signer;

/// Signs an access token for `user` in `session`; returns it with its expiry.
pub fn issue_access_token(
    signer: &Signer,
    config: &AuthConfig,
    user: Uuid,
    session: Uuid,
    role: Role,
    now: DateTime<Utc>,
) -> Result<(String, DateTime<Utc>), AuthError> {
    let expires = now + chrono::Duration::from_std(config.access_ttl).unwrap_or_default();
    let claims = AccessClaims {
        iss: config.tokens.issuer.clone(),
        aud: config.tokens.audience.clone(),
        sub: user.to_string(),
        sid: session.to_string(),
        role,
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: expires.timestamp(),
        jti: Uuid::now_v7().to_string(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.into());
    header.kid = Some(signer.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &signer.key)
        .map_err(|e| AuthError::Signing(e.to_string()))?;
    Ok((token, expires))
}

/// A new refresh token (`rt_` + 256 random bits) and the SHA-256 that is stored instead
/// of it.
pub fn new_refresh_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{REFRESH_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

/// SHA-256 of a token: what the database stores and looks up.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new API key: the secret (`sk_` + 256 random bits), the prefix shown in listings,
/// and the SHA-256 that is stored instead of the secret.
pub fn new_api_key() -> (String, String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!(
        "{}{}",
        strata_runtime::identity::API_KEY_PREFIX,
        URL_SAFE_NO_PAD.encode(bytes)
    );
    let prefix: String = secret.chars().take(11).collect();
    let hash = hash_token(&secret);
    (secret, prefix, hash)
}
