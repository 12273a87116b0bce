//! Who is calling: the [`Role`] of an account and the verified [`Principal`] with the
//! [`Credential`] it presented.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::token::{AccessClaims, TokenError};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    /// An ordinary account.
    User,
    /// May call admin RPCs of every service.
    Admin,
}

impl Role {
    /// The stored and signed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Admin => "ADMIN",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "USER" => Some(Role::User),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The credential a call presented: an access token of a session, or an API key. They
/// allow different things: only sessions manage sessions, passwords and keys, and only API
/// keys are limited by scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token, issued to this session.
    Session {
        /// The session's id.
        session_id: Uuid,
    },
    /// An API key, allowed only its scopes.
    ApiKey {
        /// The key's id.
        key_id: Uuid,
        /// The scopes it was created with (`resource:action`).
        scopes: Vec<String>,
    },
}

/// The verified caller of an RPC, put into request extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: Uuid,
    /// Role.
    pub role: Role,
    /// What the caller presented.
    pub credential: Credential,
    /// Expiry of the credential, seconds since the epoch (none: API key without expiry).
    pub expires_at: Option<i64>,
}

impl Principal {
    /// The principal of verified access-token claims.
    pub fn from_claims(claims: &AccessClaims) -> Result<Self, TokenError> {
        let session_id = Uuid::parse_str(&claims.sid).map_err(|_| TokenError::Malformed)?;
        Ok(Self {
            user_id: Uuid::parse_str(&claims.sub).map_err(|_| TokenError::Malformed)?,
            role: claims.role,
            credential: Credential::Session { session_id },
            expires_at: Some(claims.exp),
        })
    }

    /// The session of an access token; `None` for an API key.
    pub fn session_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session { session_id } => Some(session_id),
            Credential::ApiKey { .. } => None,
        }
    }

    /// The API key's id; `None` for an access token.
    pub fn api_key_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::ApiKey { key_id, .. } => Some(key_id),
            Credential::Session { .. } => None,
        }
    }

    /// Whether the caller has the admin role.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the credential allows `scope`: access tokens allow everything their role
    /// does; API keys only their scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.credential {
            Credential::Session { .. } => true,
            Credential::ApiKey { scopes, .. } => scopes.iter().any(|s| s == scope),
        }
    }
}
