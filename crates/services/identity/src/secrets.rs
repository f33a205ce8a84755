//! Secrets identity hands out and how it keeps them: random 256-bit values shown once,
//! stored only as a SHA-256 digest (they are high-entropy, so a fast hash is the right
//! tool); passwords hashed with argon2id (slow on purpose), on the blocking pool.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of API token secrets, so a leaked one is recognisable (and greppable by scanners).
pub const TOKEN_PREFIX: &str = "rmt_";

/// 32 random bytes, base64url.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn new_api_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_secret())
}

/// The stored form of a session or token secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Hashes a password with argon2id (the crate's defaults: OWASP's m=19 MiB, t=2, p=1).
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2 hash failed: {e}"))
    })
    .await?
}

/// Checks a password against a stored PHC string. A malformed stored hash counts as a
/// mismatch (and is logged), never as a success.
pub async fn verify_password(password: String, stored: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = match PasswordHash::new(&stored) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "stored password hash is malformed");
                return Ok(false);
            }
        };
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse battery".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(!verify_password("wrong horse battery".into(), hash)
            .await
            .unwrap());
        assert!(!verify_password("x".into(), "not a hash".into())
            .await
            .unwrap());
    }

    #[test]
    fn secrets_are_random_and_digests_stable() {
        assert_ne!(random_secret(), random_secret());
        assert!(new_api_token().starts_with(TOKEN_PREFIX));
        assert_eq!(digest("a"), digest("a"));
        assert_ne!(digest("a"), digest("b"));
        assert_eq!(digest("a").len(), 64);
    }
}
