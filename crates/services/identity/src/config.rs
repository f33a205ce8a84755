//! Identity's settings, part of the binary's one configuration struct (`[identity]` in
//! `rendermart.toml`, `RENDERMART_IDENTITY__*` in the environment).

use std::time::Duration;

use rendermart_platform::ratelimit::Limit;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// How long a browser session lasts, in seconds.
    pub session_ttl_secs: u64,
    /// Log-in attempts per client address, whatever the account (docs/login-policy.md).
    pub login_per_ip: Limit,
    /// Failed log-ins to one account from one address: beyond it, that address is refused
    /// (429) for that account until the window ends. A success forgives the failures.
    pub login_per_account_address: Limit,
    /// Failed log-ins to one account from anywhere: beyond it, log-ins to that account
    /// from browsers it has not signed in on before are slowed by `login_slowdown_ms`,
    /// never refused, so a stranger cannot lock the owner out.
    pub login_per_account: Limit,
    /// The slow-down of a log-in to an account under attack, in milliseconds.
    pub login_slowdown_ms: u64,
    /// Sign-ups per client IP.
    pub signup_per_ip: Limit,
    /// Sign-up attempts per email.
    pub signup_per_account: Limit,
    /// How long a valid session or token is trusted without asking identity again, in
    /// milliseconds (in this process, and in processes that reach identity remotely). A
    /// revocation takes effect everywhere within this time; 0 disables the cache.
    pub auth_cache_ttl_ms: u64,
    /// Most credentials the cache keeps.
    pub auth_cache_capacity: usize,
    /// Password hashes computed at once (each holds 19 MiB of memory); 0 means one per
    /// CPU core.
    pub hash_concurrency: usize,
    /// Sign-ups and log-ins that may wait for a hashing slot; beyond it they are told 503
    /// with `Retry-After` at once.
    pub hash_queue: usize,
    /// Longest wait for a hashing slot, in milliseconds; then 503 with `Retry-After`.
    pub hash_wait_ms: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let limit = |max, secs| Limit {
            max,
            window: Duration::from_secs(secs),
        };
        Self {
            session_ttl_secs: 14 * 24 * 3600,
            login_per_ip: limit(30, 300),
            login_per_account_address: limit(5, 900),
            login_per_account: limit(20, 900),
            login_slowdown_ms: 1000,
            signup_per_ip: limit(10, 3600),
            signup_per_account: limit(5, 3600),
            auth_cache_ttl_ms: 500,
            auth_cache_capacity: 10_000,
            hash_concurrency: 0,
            hash_queue: 128,
            hash_wait_ms: 2000,
        }
    }
}

impl IdentityConfig {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    pub fn login_slowdown(&self) -> Duration {
        Duration::from_millis(self.login_slowdown_ms.min(10_000))
    }

    pub fn hash_concurrency(&self) -> usize {
        match self.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    pub fn hash_wait(&self) -> Duration {
        Duration::from_millis(self.hash_wait_ms.min(30_000))
    }

    pub fn auth_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.auth_cache_ttl_ms.min(1000))
    }
}
