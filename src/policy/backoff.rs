//! Exponential backoff with full jitter, and the retry-or-give-up decision.

use std::time::Duration;

use crate::model::Timestamp;

/// `base × 2ⁿ` capped at `cap`, with full jitter (a uniform draw between zero
/// and that ceiling, as in AWS's "Exponential Backoff and Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the delay after the first failure.
    pub base: Duration,
    /// Largest ceiling, however many failures.
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling after `failures` failures: `base × 2^(failures-1)`, capped.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let ceiling = Duration::from_millis(base_ms.saturating_mul(factor));
        ceiling.min(self.cap)
    }

    /// The delay before the next attempt; `jitter` is a uniform draw in `[0, 1]`.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        self.ceiling(failures).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait in `retry_wait` until this time.
    RetryAt(Timestamp),
    /// The retry budget is spent: fail permanently.
    GiveUp,
}

/// Decides the fate of a job that just failed transiently for the
/// `failures`-th time. A server's `Retry-After` wins over the computed delay
/// (still capped); `max_attempts == 0` means no budget.
pub fn decide_retry(
    now: Timestamp,
    backoff: Backoff,
    failures: u32,
    max_attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> RetryDecision {
    if max_attempts != 0 && failures >= max_attempts {
        return RetryDecision::GiveUp;
    }
    let delay = match retry_after {
        Some(asked) => asked.min(backoff.cap),
        None => backoff.delay(failures, jitter),
    };
    RetryDecision::RetryAt(now.after(delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Backoff = Backoff { base: Duration::from_secs(30), cap: Duration::from_hours(5) };

    #[test]
    fn ceiling_doubles_from_thirty_seconds_up_to_five_hours() {
        let table = [
            (0, 30),
            (1, 30),
            (2, 60),
            (3, 120),
            (4, 240),
            (9, 7_680),
            (10, 15_360),
            (11, 18_000),
            (40, 18_000),
            (u32::MAX, 18_000),
        ];
        for (failures, secs) in table {
            assert_eq!(STANDARD.ceiling(failures), Duration::from_secs(secs), "failures={failures}");
        }
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let table =
            [(3, 0.0, 0), (3, 0.5, 60_000), (3, 1.0, 120_000), (3, 7.0, 120_000), (3, -1.0, 0), (20, 0.25, 4_500_000)];
        for (failures, jitter, millis) in table {
            assert_eq!(
                STANDARD.delay(failures, jitter),
                Duration::from_millis(millis),
                "failures={failures} jitter={jitter}"
            );
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let now = Timestamp(1_000);
        let table = [
            (None, RetryDecision::RetryAt(Timestamp(61_000))),
            (Some(Duration::from_secs(7)), RetryDecision::RetryAt(Timestamp(8_000))),
            (Some(Duration::from_secs(99_999)), RetryDecision::RetryAt(Timestamp(18_001_000))),
        ];
        for (retry_after, expected) in table {
            assert_eq!(decide_retry(now, STANDARD, 3, 0, retry_after, 0.5), expected);
        }
    }

    #[test]
    fn budget_is_spent_at_max_attempts() {
        let now = Timestamp(0);
        let table = [(4, 5, false), (5, 5, true), (6, 5, true), (1_000, 0, false)];
        for (failures, max, gives_up) in table {
            let decision = decide_retry(now, STANDARD, failures, max, None, 1.0);
            assert_eq!(decision == RetryDecision::GiveUp, gives_up, "failures={failures} max={max}");
        }
    }
}
