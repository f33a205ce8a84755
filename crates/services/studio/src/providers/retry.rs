//! Retrying a provider: capped exponential backoff with jitter, a bounded number of
//! attempts, Retry-After honoured as a floor, and never a retry of an error that would fail
//! the same way again (rejected prompt, bad credentials, unreadable answer).

use std::{future::Future, time::Duration};

use rand::Rng;

use super::{GeneratedImage, ImageProvider, ProviderError};
use crate::domain::GenerationRequest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// The longest single wait; a longer Retry-After ends the retries instead.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        super::config::RetryConfig::default().policy()
    }
}

impl RetryPolicy {
    /// The wait after the `failed`-th failed attempt (1-based), before jitter:
    /// `initial × 2^(failed-1)`, capped.
    pub fn backoff(&self, failed: u32) -> Duration {
        let exp = failed.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff)
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not retryable, or the
/// policy's attempts are used up; returns the last error then.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, ProviderError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let max = policy.max_attempts.max(1);
    let mut n = 1;
    loop {
        let err = match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !err.is_retryable() || n >= max {
            return Err(err);
        }
        // Equal jitter: half the backoff fixed, half random, so many jobs throttled at
        // once do not come back at the same instant.
        let b = policy.backoff(n);
        let jittered = b / 2 + b.mul_f64(rand::thread_rng().gen_range(0.0..0.5));
        let wait = match err.retry_after() {
            Some(hint) if hint > policy.max_backoff => {
                tracing::warn!(error = %err, "provider asks to wait longer than the retry cap; giving up");
                return Err(err);
            }
            Some(hint) => jittered.max(hint),
            None => jittered,
        };
        tracing::warn!(attempt = n, wait_ms = wait.as_millis() as u64, error = %err, "retrying provider");
        tokio::time::sleep(wait).await;
        n += 1;
    }
}

/// [`ImageProvider::generate`] under a [`RetryPolicy`].
pub async fn generate_with_retry(
    provider: &dyn ImageProvider,
    request: &GenerationRequest,
    policy: &RetryPolicy,
) -> Result<GeneratedImage, ProviderError> {
    retry(policy, |_| provider.generate(request)).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        }
    }

    fn unavailable() -> ProviderError {
        ProviderError::Unavailable {
            provider: "p".into(),
            status: Some(503),
            message: "down".into(),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let got: Vec<u64> = (1..=6).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_until_the_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let r: Result<(), _> = retry(&policy(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(unavailable()) }
        })
        .await;
        assert!(matches!(r, Err(ProviderError::Unavailable { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Three waits: at least half of 100 + 200 + 400 ms, at most all of it.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(350) && waited <= Duration::from_millis(700),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_prompts_are_never_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&policy(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(ProviderError::Rejected {
                    provider: "p".into(),
                    reason: "content policy".into(),
                })
            }
        })
        .await;
        assert!(matches!(r, Err(ProviderError::Rejected { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_and_too_long_a_hint_ends_the_retries() {
        let started = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let r = retry(&policy(), |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 1 {
                    Err(ProviderError::Throttled {
                        provider: "p".into(),
                        retry_after: Some(Duration::from_millis(900)),
                        message: "slow down".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        assert!(started.elapsed() >= Duration::from_millis(900));

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&policy(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(ProviderError::Throttled {
                    provider: "p".into(),
                    retry_after: Some(Duration::from_secs(60)),
                    message: "quota".into(),
                })
            }
        })
        .await;
        assert!(matches!(r, Err(ProviderError::Throttled { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
