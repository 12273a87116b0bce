//! Password policy and hashing.
//!
//! Hashes are argon2id at OWASP's parameters (19 MiB, t=2, p=1), stored as PHC strings
//! with their parameters. Hashing and verification run on tokio's blocking pool behind a
//! semaphore sized to the CPU count: never on the async workers, and never more at once
//! than there are cores. A stored hash with absurd parameters is refused before any
//! memory is allocated for it. Unknown emails are verified against a dummy hash, so a
//! sign-in takes the same time whether or not the account exists.
//!
//! Policy (NIST SP 800-63B): 8 to 128 characters, no composition rules, no truncation,
//! not one of the 10,000 most common passwords (`data/common-passwords.txt`, compared
//! case-insensitively).

use std::collections::HashSet;
use std::sync::Arc;

use argon2::password_hash::PasswordHasher as _;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::error::AuthError;

/// Shortest accepted password, in characters.
pub const MIN_CHARS: usize = 8;
/// Longest accepted password, in characters.
pub const MAX_CHARS: usize = 128;
/// OWASP argon2id memory cost, KiB.
pub const M_COST_KIB: u32 = 19 * 1024;
/// OWASP argon2id iterations.
pub const T_COST: u32 = 2;
/// OWASP argon2id parallelism.
pub const P_COST: u32 = 1;

/// Stored hashes asking for more than this are refused unverified.
const MAX_M_COST_KIB: u32 = 256 * 1024;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;

const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// Why a password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// Fewer than 8 characters.
    #[error("must be at least 8 characters")]
    TooShort,
    /// More than 128 characters.
    #[error("must be at most 128 characters")]
    TooLong,
    /// In the list of the most common passwords.
    #[error("is too common; choose one that is harder to guess")]
    Common,
}

/// Policy and hashing, shared by every handler.
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    common: HashSet<&'static str>,
    dummy_hash: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// OWASP parameters, one concurrent hash per core. Computes the dummy hash once.
    pub fn new() -> Result<Self, AuthError> {
        let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
            .map_err(|e| AuthError::Hashing(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let dummy_hash = hash_blocking(&params, b"strata dummy password for unknown accounts")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            common: COMMON_PASSWORDS.lines().collect(),
            dummy_hash,
        })
    }

    /// Checks the policy; says why a password is refused.
    pub fn check_policy(&self, password: &str) -> Result<(), PolicyViolation> {
        let chars = password.chars().count();
        if chars < MIN_CHARS {
            return Err(PolicyViolation::TooShort);
        }
        if chars > MAX_CHARS {
            return Err(PolicyViolation::TooLong);
        }
        if self.common.contains(password.to_lowercase().as_str()) {
            return Err(PolicyViolation::Common);
        }
        Ok(())
    }

    /// Hashes `password` on the blocking pool.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let params = self.params.clone();
        self.blocking(move || hash_blocking(&params, password.as_bytes()))
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account (`None`), which then always fails. Same work either way.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AuthError> {
        let exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let matched = self
            .blocking(move || verify_blocking(&phc, password.as_bytes()))
            .await?;
        Ok(exists && matched)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| AuthError::Hashing(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AuthError::Hashing(e.to_string()))?
    }
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, AuthError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Parses `phc`, refuses other algorithms and absurd parameters, then verifies.
fn verify_blocking(phc: &str, password: &[u8]) -> Result<bool, AuthError> {
    let hash =
        PasswordHash::new(phc).map_err(|e| AuthError::Hashing(format!("stored hash: {e}")))?;
    check_stored_params(&hash)?;
    Ok(Argon2::default().verify_password(password, &hash).is_ok())
}

/// Refuses hashes that are not argon2id or whose costs would let a corrupt or planted
/// hash exhaust memory or CPU; only parses, allocates nothing.
fn check_stored_params(hash: &PasswordHash) -> Result<(), AuthError> {
    if hash.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str() {
        return Err(AuthError::Hashing("stored hash is not argon2id".into()));
    }
    let params = Params::try_from(hash)
        .map_err(|e| AuthError::Hashing(format!("stored parameters: {e}")))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(AuthError::Hashing(
            "stored hash parameters are out of bounds".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn policy_table() {
        let passwords = Passwords::new().unwrap();
        let cases: &[(&str, Result<(), PolicyViolation>)] = &[
            ("", Err(PolicyViolation::TooShort)),
            ("short", Err(PolicyViolation::TooShort)),
            ("1234567", Err(PolicyViolation::TooShort)),
            ("ünïcödé", Err(PolicyViolation::TooShort)),
            ("password", Err(PolicyViolation::Common)),
            ("PASSWORD", Err(PolicyViolation::Common)),
            ("12345678", Err(PolicyViolation::Common)),
            ("iloveyou", Err(PolicyViolation::Common)),
            ("qwertyuiop", Err(PolicyViolation::Common)),
            ("correct horse battery staple", Ok(())),
            ("ünïcödé!", Ok(())),
            ("aaaaaaaa-not-common-1", Ok(())),
            ("no composition rules needed", Ok(())),
        ];
        for (password, expected) in cases {
            assert_eq!(passwords.check_policy(password), *expected, "{password:?}");
        }
        assert_eq!(passwords.check_policy(&"x".repeat(128)), Ok(()));
        assert_eq!(
            passwords.check_policy(&"x".repeat(129)),
            Err(PolicyViolation::TooLong)
        );
        assert_eq!(
            passwords.check_policy(&"é".repeat(128)),
            Ok(()),
            "characters, not bytes"
        );
        assert!(passwords.common.len() >= 10_000);
    }

    #[tokio::test]
    async fn hashes_are_argon2id_owasp_and_verify_without_truncation() {
        let passwords = Passwords::new().unwrap();
        let long = format!("{}A", "x".repeat(127));
        let hash = passwords.hash(long.clone()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify(long.clone(), Some(hash.clone()))
                .await
                .unwrap()
        );
        let mut truncated = long.clone();
        truncated.pop();
        assert!(
            !passwords
                .verify(truncated, Some(hash.clone()))
                .await
                .unwrap(),
            "no truncation"
        );
        assert!(
            !passwords.verify(long, None).await.unwrap(),
            "unknown accounts never match"
        );
    }

    #[tokio::test]
    async fn absurd_stored_parameters_are_refused() {
        let passwords = Passwords::new().unwrap();
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let err = passwords
            .verify("whatever1".into(), Some(huge.into()))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Hashing(_)), "{err:?}");
        let other = "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(
            passwords
                .verify("whatever1".into(), Some(other.into()))
                .await
                .is_err()
        );
    }
}
