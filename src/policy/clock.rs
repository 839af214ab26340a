//! Sleeps the system did not announce: between two readings, the wall
//! clock ran ahead of the monotonic clock, which stops while the machine
//! sleeps (Linux `CLOCK_MONOTONIC`, macOS `CLOCK_UPTIME_RAW`). A clock
//! stepped forward looks the same, and is treated the same: conditions are
//! read again and every deadline is taken from the wall clock anew. Pure:
//! the caller passes both readings.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
