//! Caller identity, in one place for every service: who is calling ([`Principal`], whose
//! [`Credential`] is a session's access token or an API key), how access tokens are
//! verified locally ([`token`]), how a session's revocation is checked in Redis
//! ([`revocation`]), and the tower layer that authenticates every call and puts the
//! principal into the request extensions ([`layer`]). The auth service issues the
//! credentials and answers `VerifyToken` with these same pieces; no service re-implements
//! any of them.

pub mod layer;
mod principal;
pub mod revocation;
pub mod token;

pub use layer::{AuthLayer, Authenticator, IdentifiedCaller};
pub use principal::{Credential, Principal, Role};
pub use revocation::{
    REVOCATIONS_COMPLETE_KEY, Revocation, SessionCheck, redis_revocation, revoked_session_key,
};
pub use token::{
    ACCESS_TOKEN_TYPE, API_KEY_PREFIX, AccessClaims, PublicKeys, REFRESH_TOKEN_PREFIX, TokenError,
    TokenSettings, VerifiedTokens, verify_access_token,
};
