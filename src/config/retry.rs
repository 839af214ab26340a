//! `[retry]`: backoff between attempts and how many to make.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Section};
use crate::policy::Backoff;

/// `[retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Backoff ceiling after the first failure.
    pub base: Option<String>,
    /// Largest backoff ceiling.
    pub cap: Option<String>,
    /// Attempts before a job fails for good (0: never).
    pub max_attempts: Option<u32>,
    /// Attempts a one-shot run makes before leaving a job in `retry_wait`.
    pub attempts_per_run: Option<u32>,
    /// Delay between attempts within one run (doubles each time).
    pub run_delay: Option<String>,
}

/// Retry tuning, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Backoff between runs (or in the daemon).
    pub backoff: Backoff,
    /// Failures after which a job fails for good (0: never).
    pub max_attempts: u32,
    /// Attempts within one `photosync backup` run.
    pub attempts_per_run: u32,
    /// Backoff between attempts within one run.
    pub in_run: Backoff,
}

impl RetryConfig {
    /// Validates `[retry]` (absent: every default).
    pub fn parse(raw: &RawRetry, section: &Section<'_>) -> Result<RetryConfig, ConfigError> {
        let base = section.duration("base", raw.base.as_deref(), Duration::from_secs(30))?;
        let cap = section.duration("cap", raw.cap.as_deref(), Duration::from_hours(5))?;
        if cap < base {
            return Err(section.error("cap", "must not be shorter than retry.base"));
        }
        let run_delay = section.duration("run_delay", raw.run_delay.as_deref(), Duration::from_secs(2))?;
        let attempts_per_run = raw.attempts_per_run.unwrap_or(3);
        if attempts_per_run == 0 {
            return Err(section.error("attempts_per_run", "must be at least 1"));
        }
        Ok(RetryConfig {
            backoff: Backoff { base, cap },
            max_attempts: raw.max_attempts.unwrap_or(30),
            attempts_per_run,
            in_run: Backoff { base: run_delay, cap: run_delay.saturating_mul(8) },
        })
    }
}
