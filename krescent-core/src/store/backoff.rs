//! [`Backoff`]: how long subscriptions and streaming models wait between attempts after a
//! transient error, and when they give up.

use std::time::Duration;

/// Exponential backoff with jitter for retrying transient errors
/// ([`StoreError::is_transient`](super::StoreError::is_transient)).
///
/// Attempt `n` (from 1) waits a random time between half and all of
/// `initial × 2^(n-1)`, at most `max_delay`. When `max_attempts` retries in a row have failed
/// too, the error is returned; a success resets the count.
///
/// The default waits 50 ms, 100 ms, … up to 5 s, for at most 12 retries in a row: about half
/// a minute of outage, with jitter, before the error reaches the caller.
///
/// ```
/// use std::time::Duration;
/// use krescent_core::store::Backoff;
///
/// let backoff = Backoff::default()
///     .initial(Duration::from_millis(10))
///     .max_delay(Duration::from_secs(1))
///     .max_attempts(100);
/// assert!(backoff.delay(1) <= Duration::from_millis(10));
/// assert!(backoff.delay(30) <= Duration::from_secs(1));
/// assert!(!backoff.gives_up_after(100));
/// assert!(backoff.gives_up_after(101));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max_delay: Duration,
    max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_attempts: 12,
        }
    }
}

impl Backoff {
    /// No retries: the first transient error is returned.
    pub fn none() -> Self {
        Backoff {
            max_attempts: 0,
            ..Backoff::default()
        }
    }

    /// Sets the wait before the first retry (the upper end of its jitter).
    pub fn initial(mut self, delay: Duration) -> Self {
        self.initial = delay;
        self
    }

    /// Sets the longest wait between two attempts.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets how many retries in a row are made before the error is returned (`u32::MAX`:
    /// practically forever).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Whether `failed` transient errors in a row exhaust the retries: the first error and
    /// `max_attempts` retries have all failed.
    pub fn gives_up_after(&self, failed: u32) -> bool {
        failed > self.max_attempts
    }

    /// The wait before retry number `attempt` (from 1): between half and all of
    /// `initial × 2^(attempt-1)`, capped at `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let full = self
            .initial
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = full / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in `[0, 1)` that differs between calls and processes (not cryptographic).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_their_jitter_and_stop_at_the_cap() {
        let backoff = Backoff::default()
            .initial(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1));
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let delay = backoff.delay(attempt);
            let full = Duration::from_millis(full);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn attempts_are_counted_in_a_row() {
        let backoff = Backoff::default().max_attempts(3);
        assert!(!backoff.gives_up_after(0));
        assert!(!backoff.gives_up_after(3));
        assert!(backoff.gives_up_after(4));
        assert!(Backoff::none().gives_up_after(1));
        assert!(!Backoff::none().gives_up_after(0));
    }
}
