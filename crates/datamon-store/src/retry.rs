//! The one retry policy of the store: how many attempts, how long to wait between them, and
//! which failures are retried.
//!
//! Two layers retry (see ARCHITECTURE.md, "Retries never lose or duplicate a write"):
//! - one HTTP request ([`RetryPolicy::REQUEST`]): object_store's `RetryConfig` for S3 and Azure
//!   is built from it ([`RetryPolicy::object_store_config`]), and the GCS JSON-API client
//!   (`gcs.rs`) runs its requests through it;
//! - one store operation ([`RetryPolicy::OPERATION`]), around the first, for what a request
//!   retry does not cover (a body cut after the response began, a create whose answer was lost).
//!
//! A third use waits between the attempts of an append that lost its sequence number to
//! another writer ([`RetryPolicy::APPEND`]).
//!
//! Waits grow exponentially from `base` up to `cap`, with full jitter: each wait is drawn
//! uniformly from zero to that bound, so concurrent writers (the tasks of one process
//! included) spread out instead of retrying in lockstep. Only [`ErrorKind::Transient`]
//! failures are retried.

use std::future::Future;
use std::time::{Duration, Instant};

use object_store::{BackoffConfig, RetryConfig};
use rand::Rng;

use crate::{Error, ErrorKind};

/// How an operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included (1: never retried).
    pub(crate) attempts: u32,
    /// The bound of the first wait; each later bound doubles, up to `cap`.
    pub(crate) base: Duration,
    /// No wait is longer than this.
    pub(crate) cap: Duration,
    /// No retry starts once this long has passed since the first attempt began.
    pub(crate) budget: Duration,
}

impl RetryPolicy {
    /// One HTTP request: at most 4 retries, waits from 100 ms up to 4 s, none after 30 s, so an
    /// unreachable store fails within seconds.
    pub(crate) const REQUEST: RetryPolicy = RetryPolicy {
        attempts: 5,
        base: Duration::from_millis(100),
        cap: Duration::from_secs(4),
        budget: Duration::from_secs(30),
    };

    /// One store operation, on top of [`RetryPolicy::REQUEST`]: 3 attempts, waits from 250 ms.
    pub(crate) const OPERATION: RetryPolicy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(250),
        cap: Duration::from_secs(4),
        budget: Duration::from_secs(120),
    };

    /// An append that lost its sequence number to another writer: many short waits.
    pub(crate) const APPEND: RetryPolicy = RetryPolicy {
        attempts: 200,
        base: Duration::from_millis(2),
        cap: Duration::from_millis(64),
        budget: Duration::from_secs(120),
    };

    /// Whether a failure of this kind is worth retrying.
    pub(crate) fn retries(kind: ErrorKind) -> bool {
        kind == ErrorKind::Transient
    }

    /// The upper bound of the wait before retry number `retry` (0 for the first retry).
    pub(crate) fn bound(&self, retry: u32) -> Duration {
        self.base
            .checked_mul(1u32 << retry.min(20))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The wait before retry number `retry` (0 for the first retry): uniform in
    /// `0..=bound(retry)` (full jitter).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let bound = u64::try_from(self.bound(retry).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=bound))
    }

    /// Whether retry number `retry` (0 for the first retry) may start, the first attempt having
    /// begun at `started`.
    pub(crate) fn may_retry(&self, retry: u32, started: Instant) -> bool {
        retry + 1 < self.attempts && started.elapsed() < self.budget
    }

    /// Runs `op` until it succeeds, fails with an error that is not transient, or the policy
    /// allows no more attempts; returns its last result. `what` and `key` name the operation
    /// in the debug log of each retry.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, key: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let started = Instant::now();
        let mut retry = 0;
        loop {
            match op().await {
                Err(e) if Self::retries(e.kind()) && self.may_retry(retry, started) => {
                    let wait = self.delay(retry);
                    tracing::debug!(op = what, key, retry, ?wait, error = %e, "retrying a store operation");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                r => return r,
            }
        }
    }

    /// The same policy as object_store's per-request retry configuration (S3, Azure), whose
    /// backoff is its own jittered exponential one between `base` and `cap`.
    pub(crate) fn object_store_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.base,
                max_backoff: self.cap,
                base: 2.0,
            },
            max_retries: self.attempts.saturating_sub(1) as usize,
            retry_timeout: self.budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn waits_are_random_exponential_and_capped() {
        for policy in [
            RetryPolicy::REQUEST,
            RetryPolicy::OPERATION,
            RetryPolicy::APPEND,
        ] {
            assert_eq!(policy.bound(0), policy.base);
            assert_eq!(policy.bound(1), policy.base * 2);
            assert_eq!(policy.bound(40), policy.cap);
            for retry in [0, 3, 12, 40] {
                let draws: HashSet<Duration> = (0..64).map(|_| policy.delay(retry)).collect();
                assert!(
                    draws.iter().all(|d| *d <= policy.bound(retry)),
                    "{policy:?} retry {retry}: {draws:?}"
                );
                // 64 draws from at least 2 ms of microseconds: equal draws would mean the wait
                // is not random (a lockstep jitter such as the process id).
                assert!(draws.len() > 32, "{policy:?} retry {retry}: {draws:?}");
            }
        }
    }

    #[test]
    fn attempts_and_budget_bound_the_retries() {
        let p = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
            budget: Duration::from_secs(60),
        };
        let now = Instant::now();
        assert!(p.may_retry(0, now) && p.may_retry(1, now) && !p.may_retry(2, now));
        let long_ago = now - Duration::from_secs(61);
        assert!(!p.may_retry(0, long_ago));
        let c = RetryPolicy::REQUEST.object_store_config();
        assert_eq!(c.max_retries, 4);
        assert_eq!(c.backoff.init_backoff, Duration::from_millis(100));
        assert_eq!(c.retry_timeout, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn only_transient_failures_are_retried() {
        let calls = AtomicU32::new(0);
        let transient = || Error::Io {
            path: "p".into(),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        };
        let r: Result<(), Error> = RetryPolicy::OPERATION
            .run("get", "k", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(transient())
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.swap(0, Ordering::Relaxed), 3);

        let r: Result<(), Error> = RetryPolicy::OPERATION
            .run("get", "k", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Error::NotFound { key: "k".into() })
            })
            .await;
        assert_eq!(r.expect_err("not found").kind(), ErrorKind::NotFound);
        assert_eq!(calls.swap(0, Ordering::Relaxed), 1);

        let r = RetryPolicy::OPERATION
            .run("get", "k", || async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0 => Err(transient()),
                    n => Ok(n),
                }
            })
            .await;
        assert_eq!(r.expect("the retry succeeds"), 1);
    }
}
