//! Pure scheduling decisions: when a failed job may run again.
//!
//! Everything here is arithmetic on values the caller passes in (clock,
//! jitter, configuration); the scheduler only applies the results. Later
//! work adds the conditions policy (power, network, windows) beside
//! [`Backoff`].

mod backoff;

pub use backoff::{Backoff, RetryDecision, decide_retry};
