//! Sleeps the system did not announce: between two readings, the wall
//! clock ran ahead of the monotonic clock, which stops while the machine
//! sleeps (Linux `CLOCK_MONOTONIC`, macOS `CLOCK_UPTIME_RAW`). A clock
//! stepped forward looks the same, and is treated the same: conditions are
//! read again and every deadline is taken from the wall clock anew. Pure:
//! the caller passes both readings.
//!
//! A [`Deadline`] is kept on both clocks, so that neither a sleep (the
//! monotonic clock stops) nor a wall clock stepped back (a pause would last
//! until the clock caught up) stretches it.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::Timestamp;

/// How far the wall clock must run ahead to count (NTP's slews and a busy
/// machine's late wake-ups stay far below).
pub const JUMP: Duration = Duration::from_secs(30);

/// The last pair of clock readings.
#[derive(Debug, Clone, Copy)]
pub struct ClockJumps {
    wall: Timestamp,
    monotonic: Duration,
}

impl ClockJumps {
    /// Starts from a reading: the wall clock, and the monotonic clock as
    /// time since any fixed instant.
    pub fn new(wall: Timestamp, monotonic: Duration) -> Self {
        Self { wall, monotonic }
    }

    /// Takes a new reading; how far the wall clock ran ahead of the
    /// monotonic one since the last reading, when that is a jump (once per
    /// jump: the next reading starts from this one).
    pub fn check(&mut self, wall: Timestamp, monotonic: Duration) -> Option<Duration> {
        let wall_passed = self.wall.until(wall);
        let monotonic_passed = monotonic.saturating_sub(self.monotonic);
        *self = Self { wall, monotonic };
        let ahead = wall_passed.saturating_sub(monotonic_passed);
        (ahead >= JUMP).then_some(ahead)
    }
}

/// A point in time a user or the retry policy set: it has come when either
/// clock says so. The wall clock runs on through a sleep; the monotonic
/// clock is not moved by a wall clock stepped back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    wall: Timestamp,
    monotonic: Instant,
}

impl Deadline {
    /// The deadline `wall`, set now.
    pub fn at(wall: Timestamp) -> Self {
        Self::set(wall, Timestamp::now(), Instant::now())
    }

    /// The deadline `wall`, set when the clocks read `now` and `monotonic`.
    pub fn set(wall: Timestamp, now: Timestamp, monotonic: Instant) -> Self {
        Self { wall, monotonic: monotonic + now.until(wall) }
    }

    /// The wall-clock time it was set for.
    pub fn wall(self) -> Timestamp {
        self.wall
    }

    /// Whether it has come, by either clock.
    pub fn passed(self, now: Timestamp, monotonic: Instant) -> bool {
        self.wall <= now || self.monotonic <= monotonic
    }

    /// When a timer armed at these readings should fire: the earlier of
    /// what the two clocks say.
    pub fn timer(self, now: Timestamp, monotonic: Instant) -> Instant {
        self.monotonic.min(monotonic + now.until(self.wall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_comes_by_whichever_clock_says_so_first() {
        let set_at = Timestamp(1_000_000_000);
        let monotonic = Instant::now();
        let deadline = Deadline::set(set_at.after(Duration::from_hours(2)), set_at, monotonic);
        // An hour-long sleep: the wall clock moved an hour, the monotonic one a second.
        let woke = set_at.after(Duration::from_hours(1));
        let after_sleep = monotonic + Duration::from_secs(1);
        assert!(!deadline.passed(woke, after_sleep));
        assert_eq!(deadline.timer(woke, after_sleep), after_sleep + Duration::from_hours(1));
        // Another hour and a half asleep: it has passed.
        assert!(deadline.passed(woke.after(Duration::from_mins(90)), after_sleep));
        // A wall clock stepped back a year: the monotonic clock still ends it on time.
        let stepped_back = Timestamp(set_at.0 - 365 * 24 * 3600 * 1000);
        assert_eq!(deadline.timer(stepped_back, monotonic), monotonic + Duration::from_hours(2));
        assert!(!deadline.passed(stepped_back, monotonic + Duration::from_mins(119)));
        assert!(deadline.passed(stepped_back, monotonic + Duration::from_hours(2)));
    }

    #[test]
    fn a_jump_is_reported_once() {
        let start = Timestamp(1_000_000);
        let mut clocks = ClockJumps::new(start, Duration::from_secs(10));
        // Ten seconds on both clocks: no jump.
        assert_eq!(clocks.check(start.after(Duration::from_secs(10)), Duration::from_secs(20)), None);
        // An hour-long sleep: the monotonic clock moved 5 s, the wall clock an hour.
        let woke = start.after(Duration::from_secs(10 + 3600 + 5));
        assert_eq!(clocks.check(woke, Duration::from_secs(25)), Some(Duration::from_hours(1)));
        // The next reading starts from the wake.
        assert_eq!(clocks.check(woke.after(Duration::from_secs(15)), Duration::from_secs(40)), None);
        // A clock stepped back is no sleep.
        assert_eq!(clocks.check(start, Duration::from_secs(41)), None);
        // A few seconds of drift is not either.
        assert_eq!(clocks.check(start.after(Duration::from_secs(12)), Duration::from_secs(51)), None);
    }
}
