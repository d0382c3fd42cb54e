//! Retry with exponential backoff and jitter for transient transport failures.

use std::future::Future;
use std::time::Duration;

use crate::error::Result;
use crate::progress::{Progress, ProgressEvent};

/// The delay a `Retry-After` header value asks for, in its delay-seconds
/// form (`"120"`); `None` for anything else.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse().ok().map(Duration::from_secs)
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retries).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Cap on any single delay (also caps a server's Retry-After).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// Delay before retry number `attempt` (1-based), with ±25% jitter,
    /// or the server's `retry_after` when given (capped at `max_delay`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_delay);
        }
        let exp = self
            .initial_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(self.max_delay);
        let jitter = rand::random_range(0.75..1.25);
        base.mul_f64(jitter).min(self.max_delay)
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    /// A final transport error records the number of attempts made.
    pub async fn run<T, F, Fut>(&self, what: &str, progress: &dyn Progress, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    let delay = self.delay(attempt, e.retry_after());
                    tracing::debug!(what, attempt, ?delay, error = %e, "retrying");
                    progress.on_event(&ProgressEvent::Retry {
                        what: what.to_string(),
                        attempt,
                        delay,
                        error: e.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(mut e) => {
                    e.set_attempts(attempt);
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RegistryError;
    use crate::progress::NoProgress;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let n = AtomicU32::new(0);
        let r = fast()
            .run("x", &NoProgress, || async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(RegistryError::transient("t", "503"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_and_reports_attempts() {
        let r: Result<()> = fast()
            .run("x", &NoProgress, || async {
                Err(RegistryError::transient("t", "503"))
            })
            .await;
        match r {
            Err(RegistryError::Transport { attempts, .. }) => assert_eq!(attempts, 4),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let n = AtomicU32::new(0);
        let r: Result<()> = fast()
            .run("x", &NoProgress, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(RegistryError::not_found("m"))
            })
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound { .. })));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delay_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert!(p.delay(1, None) <= Duration::from_millis(250));
        assert!(p.delay(30, None) <= p.max_delay);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))), p.max_delay);
    }
}
