//! One upload rate limit shared by every upload: a token bucket that runs
//! into debt, so concurrent uploads together average the configured rate and
//! a change of rate (timetable boundary, reload) applies at once.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Burst allowance: how many seconds of traffic may go without waiting.
const BURST_SECONDS: f64 = 0.25;

/// The shared limiter. Unlimited until [`Throttle::set_rate`] says otherwise.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    rate: Option<u64>,
    /// Bytes that may still go without waiting; negative: debt to wait off.
    available: f64,
    updated: Instant,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle { state: Mutex::new(Bucket { rate: None, available: 0.0, updated: Instant::now() }) }
    }
}

impl Throttle {
    /// Sets the limit in bytes per second (`None`: unlimited).
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if bucket.rate != rate {
            tracing::info!(limit = ?rate, "upload bandwidth limit changed");
            *bucket = Bucket { rate, available: 0.0, updated: Instant::now() };
        }
    }

    /// The limit in bytes per second, if one is in force.
    pub fn rate(&self) -> Option<u64> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).rate
    }

    /// Whether a limit is in force (uploads then use smaller chunks).
    pub fn is_limited(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).rate.is_some()
    }

    /// Accounts for `bytes` sent at `now`; returns how long the sender must
    /// wait so the average stays at the rate.
    pub fn reserve_at(&self, bytes: u64, now: Instant) -> Duration {
        let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(rate) = bucket.rate.filter(|r| *r > 0) else { return Duration::ZERO };
        let rate = rate as f64;
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.available = (bucket.available + elapsed * rate).min(rate * BURST_SECONDS) - bytes as f64;
        bucket.updated = now;
        if bucket.available >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-bucket.available / rate) }
    }

    /// Waits as long as sending `bytes` requires (async senders).
    pub async fn consume(&self, bytes: u64) {
        let wait = self.reserve_at(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits as long as sending `bytes` requires (blocking senders).
    pub fn consume_blocking(&self, bytes: u64) {
        let wait = self.reserve_at(bytes, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_spreads_sends_to_the_rate() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(throttle.reserve_at(1 << 20, t0), Duration::ZERO, "unlimited");
        throttle.set_rate(Some(1_000_000));
        let start = throttle.state.lock().expect("lock").updated;
        // 500 kB now: half a second of debt.
        assert_eq!(throttle.reserve_at(500_000, start), Duration::from_millis(500));
        // Another 500 kB at once: one second of debt in all.
        assert_eq!(throttle.reserve_at(500_000, start), Duration::from_secs(1));
        // Two seconds later the debt is paid and a quarter second of burst saved.
        let later = start + Duration::from_secs(3);
        assert_eq!(throttle.reserve_at(250_000, later), Duration::ZERO);
        assert_eq!(throttle.reserve_at(100_000, later), Duration::from_millis(100));
        throttle.set_rate(None);
        assert!(!throttle.is_limited());
        assert_eq!(throttle.reserve_at(u64::MAX, later), Duration::ZERO);
    }
}
