//! Password policy and hashing.
//!
//! Hashes are argon2id at OWASP's parameters (19 MiB, t=2, p=1), stored as PHC strings
//! with their parameters. Hashing and verification run on tokio's blocking pool behind a
//! semaphore sized to the CPU count: never on the async workers, and never more at once
//! than there are cores. A stored hash with absurd parameters is refused before any
//! memory is allocated for it. Unknown emails are verified against a dummy hash, so a
//! sign-in takes the same time whether or not the account exists.
//!
//! Memory is bounded by design: each permit of the semaphore has one argon2 working
//! memory (19 MiB), allocated on first use and reused by every later hash. Allocating it
//! per hash let the allocator keep freed 19 MiB blocks in per-thread arenas of the
//! blocking pool: a process grew by hundreds of megabytes after a few hundred logins and
//! never gave them back.
//!
//! Policy (NIST SP 800-63B): 8 to 128 characters, no composition rules, no truncation,
//! not one of the 10,000 most common passwords (`data/common-passwords.txt`, compared
//! case-insensitively).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use rand::RngCore as _;
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

/// Bytes of a generated salt.
const SALT_LEN: usize = 16;
/// Bytes of a hash output.
const OUTPUT_LEN: usize = 32;

/// Argon2 working memories, one per permit, kept for reuse.
#[derive(Debug, Default)]
struct Memories {
    free: Mutex<Vec<Vec<Block>>>,
}

impl Memories {
    /// A memory of at least `blocks` blocks: a kept one, or a new one.
    fn take(&self, blocks: usize) -> Vec<Block> {
        let kept = self.free.lock().ok().and_then(|mut free| free.pop());
        match kept {
            Some(memory) if memory.len() >= blocks => memory,
            _ => vec![Block::default(); blocks],
        }
    }

    fn give_back(&self, memory: Vec<Block>) {
        if let Ok(mut free) = self.free.lock() {
            free.push(memory);
        }
    }
}

/// Policy and hashing, shared by every handler.
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    memories: Arc<Memories>,
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
        let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(hashing_error)?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let memories = Arc::new(Memories::default());
        let mut memory = memories.take(params.block_count());
        let dummy_hash = hash_blocking(
            &params,
            b"strata dummy password for unknown accounts",
            &mut memory,
        )?;
        memories.give_back(memory);
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            memories,
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
        self.blocking(move |memory| hash_blocking(&params, password.as_bytes(), memory))
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
            .blocking(move |memory| verify_blocking(&phc, password.as_bytes(), memory))
            .await?;
        Ok(exists && matched)
    }

    /// Runs `work` on the blocking pool under a permit, with the permit's working memory.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(hashing_error)?;
        let memories = Arc::clone(&self.memories);
        let blocks = self.params.block_count();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = memories.take(blocks);
            let result = work(&mut memory);
            memories.give_back(memory);
            result
        })
        .await
        .map_err(hashing_error)?
    }
}

fn hashing_error(e: impl std::fmt::Display) -> AuthError {
    AuthError::Hashing(e.to_string())
}

/// The argon2id PHC string of `password` with a new salt, computed in `memory`.
fn hash_blocking(
    params: &Params,
    password: &[u8],
    memory: &mut [Block],
) -> Result<String, AuthError> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let mut output = [0u8; OUTPUT_LEN];
    let blocks = memory
        .get_mut(..params.block_count())
        .ok_or_else(|| hashing_error("working memory too small"))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut output, blocks)
        .map_err(hashing_error)?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(hashing_error)?,
        salt: Some(Salt::new(&salt).map_err(hashing_error)?),
        hash: Some(Output::new(&output).map_err(hashing_error)?),
    };
    Ok(phc.to_string())
}

/// Parses `phc`, refuses other algorithms and absurd parameters, then verifies in
/// `memory` (a hash asking for more memory than it has gets its own, for this once).
fn verify_blocking(phc: &str, password: &[u8], memory: &mut [Block]) -> Result<bool, AuthError> {
    let hash =
        PasswordHash::new(phc).map_err(|e| AuthError::Hashing(format!("stored hash: {e}")))?;
    check_stored_params(&hash)?;
    let params = Params::try_from(&hash)
        .map_err(|e| AuthError::Hashing(format!("stored parameters: {e}")))?;
    let version = hash
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| AuthError::Hashing(format!("stored version: {e}")))?
        .unwrap_or_default();
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err(AuthError::Hashing(
            "stored hash lacks salt or output".into(),
        ));
    };
    let mut output = vec![0u8; expected.len()];
    let argon2 = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let blocks = params.block_count();
    let mut own;
    let working = if memory.len() >= blocks {
        &mut memory[..blocks]
    } else {
        own = vec![Block::default(); blocks];
        &mut own[..]
    };
    argon2
        .hash_password_into_with_memory(password, salt, &mut output, working)
        .map_err(hashing_error)?;
    // Output's equality is constant-time.
    Ok(Output::new(&output).map_err(hashing_error)? == *expected)
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
    async fn hashes_interoperate_with_the_argon2_crates_own_phc_code() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let passwords = Passwords::new().unwrap();
        let ours = passwords.hash("interoperable".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"interoperable", &parsed)
                .is_ok()
        );
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            passwords.params.clone(),
        )
        .hash_password(b"from elsewhere")
        .unwrap()
        .to_string();
        assert!(
            passwords
                .verify("from elsewhere".into(), Some(theirs.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong".into(), Some(theirs))
                .await
                .unwrap()
        );
        // A stored hash asking for less memory than ours verifies too.
        let small = Params::new(8 * 1024, 1, 1, None).unwrap();
        let smaller = Argon2::new(Algorithm::Argon2id, Version::V0x13, small)
            .hash_password(b"cheap")
            .unwrap()
            .to_string();
        assert!(
            passwords
                .verify("cheap".into(), Some(smaller))
                .await
                .unwrap()
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
