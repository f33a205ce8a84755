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
    /// Log-in attempts per client IP.
    pub login_per_ip: Limit,
    /// Log-in attempts per account (email), wherever they come from.
    pub login_per_account: Limit,
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
            login_per_account: limit(10, 300),
            signup_per_ip: limit(10, 3600),
            signup_per_account: limit(5, 3600),
            auth_cache_ttl_ms: 500,
            auth_cache_capacity: 10_000,
        }
    }
}

impl IdentityConfig {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    pub fn auth_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.auth_cache_ttl_ms.min(1000))
    }
}
