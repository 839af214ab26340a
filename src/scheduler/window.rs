//! Short upload windows: when the allowed hours (`policy.windows`) end
//! soon, a file that cannot finish before they do waits, and smaller ones
//! that can go first, rather than an upload being cut at the end of the
//! window and its bytes spent for nothing.
//!
//! Whether a file fits is judged from what one upload moves per second:
//! the bandwidth limit, or the rate uploads of this run have reached,
//! whichever is lower; before anything has been uploaded (and with no
//! limit) every file is tried.

use std::time::Duration;

use super::Scheduler;
use crate::catalog::PendingJob;
use crate::model::Timestamp;

/// Uploads shorter than this say little about the link's rate.
const MIN_SAMPLE: Duration = Duration::from_millis(200);

/// The rate uploads of this run reached, over the uploads long enough to
/// tell.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Throughput {
    bytes: u64,
    time: Duration,
}

impl Throughput {
    /// Counts one finished upload that sent `bytes` in `time`.
    pub(super) fn record(&mut self, bytes: u64, time: Duration) {
        if time >= MIN_SAMPLE && bytes > 0 {
            self.bytes += bytes;
            self.time += time;
        }
    }

    fn per_second(self) -> Option<u64> {
        (self.time >= MIN_SAMPLE).then(|| (self.bytes as f64 / self.time.as_secs_f64()) as u64)
    }
}

impl Scheduler<'_> {
    /// Sets when the allowed window ends (`None`: no window, any time is
    /// allowed).
    pub fn set_window_end(&mut self, end: Option<Timestamp>) {
        self.window_end = end;
    }

    /// Bytes one upload can move before the window ends, if it ends and
    /// the rate is known.
    pub(super) fn window_budget(&self) -> Option<u64> {
        let end = self.window_end?;
        let left = Timestamp::now().until(end);
        let rate = match (self.throttle.rate(), self.throughput.per_second()) {
            (Some(limit), Some(seen)) => limit.min(seen),
            (limit, seen) => limit.or(seen)?,
        };
        Some((rate as f64 * left.as_secs_f64()) as u64)
    }

    /// The reason a job that does not fit waits, for `status` and `backup`.
    pub(super) fn too_big_reason(&self) -> Option<String> {
        let end = self.window_end?;
        let local = jiff::Timestamp::from_millisecond(end.0)
            .map(|t| t.to_zoned(jiff::tz::TimeZone::system()).strftime("%H:%M").to_string())
            .unwrap_or_default();
        Some(format!("too big to finish before the upload window closes at {local}"))
    }
}

/// When uploads leave the allowed `windows`, seen at `now`, local minute
/// `minute_of_day`: `None` when there are none.
pub fn window_end(windows: &[crate::policy::Window], minute_of_day: u16, now: Timestamp) -> Option<Timestamp> {
    let left = crate::policy::window_left(windows, minute_of_day)?;
    let this_minute = Timestamp(now.0 - now.0.rem_euclid(60_000));
    Some(this_minute.after(Duration::from_secs(u64::from(left) * 60)))
}

/// Whether `pending` can finish within `budget` bytes (any file, without one).
pub(super) fn fits(pending: &PendingJob, budget: Option<u64>) -> bool {
    budget.is_none_or(|bytes| pending.stat.size <= bytes)
}
