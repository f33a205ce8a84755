//! Secrets identity hands out and how it keeps them: random 256-bit values shown once,
//! stored only as a SHA-256 digest (they are high-entropy, so a fast hash is the right
//! tool); passwords hashed with argon2id (slow on purpose), on the blocking pool, a
//! bounded number at a time ([`Hasher`]).

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use rendermart_identity_api::IdentityError;
use sha2::{Digest, Sha256};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// Password hashing under a bound. Each argon2id computation holds 19 MiB for tens of
/// milliseconds, so an unbounded burst of log-ins is a burst of memory (an outside probe
/// took a process to 7.7 GB with 200 at a time). At most `concurrency` run at once, at
/// most `max_waiting` callers queue for a slot, each for at most `max_wait`; anyone else is
/// told [`IdentityError::Busy`] (503 with `Retry-After`) at once.
pub struct Hasher {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

impl Hasher {
    pub fn new(concurrency: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait,
        }
    }

    fn busy(&self) -> IdentityError {
        metrics::counter!("identity_password_checks_refused_total").increment(1);
        IdentityError::Busy {
            retry_after_secs: self.max_wait.as_secs().clamp(1, 60),
        }
    }

    /// A slot, or `Busy`. The slot travels into the blocking task, so work a caller gave up
    /// on still counts until it ends.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, IdentityError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.busy());
        }
        // Decremented however this future ends (answered, timed out or dropped).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(self.busy()),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, IdentityError> {
        let permit = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| IdentityError::Internal(e.into()))
    }

    /// Hashes a password with argon2id (the crate's defaults: OWASP's m=19 MiB, t=2, p=1).
    pub async fn hash(&self, password: String) -> Result<String, IdentityError> {
        self.run(move || hash_now(&password)).await?
    }

    /// Checks a password against a stored PHC string. A malformed stored hash counts as a
    /// mismatch (and is logged), never as a success.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, IdentityError> {
        self.run(move || {
            let parsed = match PasswordHash::new(&stored) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "stored password hash is malformed");
                    return false;
                }
            };
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }
}

fn hash_now(password: &str) -> Result<String, IdentityError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Internal(anyhow::anyhow!("argon2 hash failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(concurrency: usize, max_waiting: usize, wait_ms: u64) -> Hasher {
        Hasher::new(concurrency, max_waiting, Duration::from_millis(wait_ms))
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hasher = hasher(2, 4, 5_000);
        let hash = hasher.hash("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher
            .verify("correct horse battery".into(), hash.clone())
            .await
            .unwrap());
        assert!(!hasher
            .verify("wrong horse battery".into(), hash)
            .await
            .unwrap());
        assert!(!hasher
            .verify("x".into(), "not a hash".into())
            .await
            .unwrap());
    }

    /// Forty callers at once against one slot and a queue of three: one runs, three wait
    /// their turn, everyone else is told "busy" at once; nobody waits unboundedly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_beyond_the_slots_and_the_queue_is_refused_as_busy() {
        let hasher = Arc::new(hasher(1, 3, 10_000));
        let calls = (0..40).map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash("correct horse battery".into()).await })
        });
        let mut ok = 0;
        let mut busy = 0;
        for call in futures_util::future::join_all(calls).await {
            match call.unwrap() {
                Ok(_) => ok += 1,
                Err(IdentityError::Busy { retry_after_secs }) => {
                    assert!((1..=60).contains(&retry_after_secs));
                    busy += 1
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((ok, busy), (4, 36));
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
    }

    /// A caller that waits longer than the bound gets "busy", and leaves the queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_for_a_slot_is_bounded_in_time() {
        let hasher = Arc::new(hasher(1, 10, 1));
        let held = hasher.slots.clone().try_acquire_owned().unwrap();
        let refused = hasher.hash("correct horse battery".into()).await;
        assert!(
            matches!(refused, Err(IdentityError::Busy { .. })),
            "{refused:?}"
        );
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
        drop(held);
        assert!(hasher.hash("correct horse battery".into()).await.is_ok());
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
