//! Fixed-window rate limits, counted in memory (one process) or in Redis (shared by all
//! replicas). A caller asks [`RateLimiter::hit`] for a key such as `login:ip:1.2.3.4` and
//! gets either "go on" or how long to wait, which becomes `429` + `Retry-After`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

/// A limit: at most `max` hits per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Limit {
    pub max: u32,
    #[serde(with = "secs")]
    pub window: Duration,
}

mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_secs)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct RateLimitError(String);

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one hit against `key` and says whether it is within `limit`.
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, RateLimitError>;
    /// Forgets `key`'s hits (after a log-in succeeds, its earlier failures no longer count).
    async fn forgive(&self, key: &str) -> Result<(), RateLimitError>;
}

/// Counters in this process's memory.
#[derive(Default)]
pub struct MemoryRateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl MemoryRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, RateLimitError> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < limit.window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= limit.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        Ok(if entry.1 > limit.max {
            Decision::Limited {
                retry_after: limit.window.saturating_sub(now.duration_since(entry.0)),
            }
        } else {
            Decision::Allowed
        })
    }

    async fn forgive(&self, key: &str) -> Result<(), RateLimitError> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.remove(key);
        Ok(())
    }
}

/// Counters in Redis: `INCR` then set the window's expiry on first hit, atomically.
pub struct RedisRateLimiter {
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

const HIT_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
";

impl RedisRateLimiter {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RateLimitError> {
        let client = redis::Client::open(url).map_err(|e| RateLimitError(e.to_string()))?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| RateLimitError(e.to_string()))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// The shared Redis connection, for other users of the same server (a clone is cheap).
    pub fn connection(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), RateLimitError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| RateLimitError(e.to_string()))
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, RateLimitError> {
        let mut conn = self.conn.clone();
        let (count, ttl_ms): (u64, i64) = redis::cmd("EVAL")
            .arg(HIT_SCRIPT)
            .arg(1)
            .arg(format!("{}:rl:{key}", self.prefix))
            .arg(limit.window.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| RateLimitError(e.to_string()))?;
        Ok(if count > u64::from(limit.max) {
            Decision::Limited {
                retry_after: Duration::from_millis(ttl_ms.max(0) as u64),
            }
        } else {
            Decision::Allowed
        })
    }

    async fn forgive(&self, key: &str) -> Result<(), RateLimitError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(format!("{}:rl:{key}", self.prefix))
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| RateLimitError(e.to_string()))
    }
}

#[async_trait]
impl crate::http::ReadinessCheck for RedisRateLimiter {
    fn name(&self) -> String {
        "redis".into()
    }
    async fn check(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_limiter_allows_max_then_limits_until_the_window_ends() {
        let limiter = MemoryRateLimiter::new();
        let limit = Limit {
            max: 3,
            window: Duration::from_millis(200),
        };
        for _ in 0..3 {
            assert_eq!(limiter.hit("k", limit).await.unwrap(), Decision::Allowed);
        }
        assert!(matches!(
            limiter.hit("k", limit).await.unwrap(),
            Decision::Limited { .. }
        ));
        assert_eq!(
            limiter.hit("other", limit).await.unwrap(),
            Decision::Allowed
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(limiter.hit("k", limit).await.unwrap(), Decision::Allowed);
    }

    async fn forgiving_a_key_resets_it_and_only_it(limiter: &dyn RateLimiter) {
        let limit = Limit {
            max: 1,
            window: Duration::from_secs(60),
        };
        let key = format!("forgive-{}", uuid::Uuid::now_v7());
        let other = format!("{key}-other");
        for k in [&key, &other] {
            assert_eq!(limiter.hit(k, limit).await.unwrap(), Decision::Allowed);
            assert!(matches!(
                limiter.hit(k, limit).await.unwrap(),
                Decision::Limited { .. }
            ));
        }
        limiter.forgive(&key).await.unwrap();
        assert_eq!(limiter.hit(&key, limit).await.unwrap(), Decision::Allowed);
        assert!(matches!(
            limiter.hit(&other, limit).await.unwrap(),
            Decision::Limited { .. }
        ));
    }

    #[tokio::test]
    async fn memory_limiter_forgives_one_key() {
        forgiving_a_key_resets_it_and_only_it(&MemoryRateLimiter::new()).await
    }

    #[tokio::test]
    async fn redis_limiter_forgives_one_key() {
        let Ok(url) = std::env::var("RENDERMART_TEST_REDIS_URL") else {
            return;
        };
        let limiter = RedisRateLimiter::connect(&url, "rm-test").await.unwrap();
        forgiving_a_key_resets_it_and_only_it(&limiter).await
    }
}
