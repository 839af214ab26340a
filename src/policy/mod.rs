//! Pure scheduling decisions: whether uploads may run now ([`decide`], with
//! [`Hysteresis`]), how fast ([`Timetable`]), how much on a metered link
//! ([`Budget`]), and when a failed job may run again ([`Backoff`]).
//!
//! Everything here is arithmetic on values the caller passes in (clock,
//! jitter, conditions, configuration); the scheduler and the daemon only
//! apply the results.

mod backoff;
mod bandwidth;
mod budget;
mod clock;
mod conditions;

pub use backoff::{Backoff, RetryDecision, decide_retry};
pub use bandwidth::{Timetable, parse_size};
pub use budget::{Budget, Cycle, Period};
pub use clock::{ClockJumps, Deadline, JUMP};
pub use conditions::{
    Conditions, Decision, HoldReason, Hysteresis, Network, Overrides, Policy, Power, Rule, Window, decide, parse_clock,
    window_left, window_open_for,
};
