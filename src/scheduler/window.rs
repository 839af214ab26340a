//! Short upload windows: when the allowed hours (`policy.windows`) end
//! soon, a file that cannot finish before they do but would fit in a whole
//! window waits for the next one, and smaller files that can finish go
//! first. A file too big for any whole window is tried anyway (an upload
//! that resumes, as S3's and Nextcloud's do, carries on in the next one).
//!
//! Whether a file fits is judged from what one upload moves per second:
//! the bandwidth limit, or the rate recent large uploads of this run
//! reached, whichever is lower; while neither is known every file is tried.

use std::time::Duration;

use jiff::tz::TimeZone;

use super::Scheduler;
use crate::catalog::PendingJob;
use crate::model::Timestamp;
use crate::policy::{Window, window_left, window_open_for};

/// Uploads smaller than this say more about latency than about the link.
const MIN_SAMPLE_BYTES: u64 = 1 << 20;

/// The allowed window uploads are in now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadWindow {
    /// When it closes.
    pub ends: Timestamp,
    /// How long it is open in all (its start to its end).
    pub length: Duration,
}

/// The window of `windows` at `now` (local time): `None` when there are
/// none (any time is allowed). Outside them it has ended already.
pub fn upload_window(windows: &[Window], now: Timestamp) -> Option<UploadWindow> {
    let zone = TimeZone::system();
    let local = jiff::Timestamp::from_millisecond(now.0).ok()?.to_zoned(zone.clone());
    let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).ok()?;
    let left = window_left(windows, minute)?;
    let open = window_open_for(windows, minute)?;
    // The end as a wall-clock time, so a change to or from summer time in
    // between is counted as it happens.
    let this_minute = local.datetime().with().second(0).subsec_nanosecond(0).build().ok()?;
    let end = this_minute.checked_add(jiff::SignedDuration::from_mins(i64::from(left))).ok()?;
    let ends = end.to_zoned(zone).ok()?.timestamp();
    let length = Duration::from_secs(u64::from(open + left) * 60);
    Some(UploadWindow { ends: Timestamp(ends.as_millisecond()), length })
}

/// The rate recent large uploads reached, bytes per second (each new one
/// counting for half).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Throughput(Option<f64>);

impl Throughput {
    /// Counts one finished upload that sent `bytes` in `time`.
    pub(super) fn record(&mut self, bytes: u64, time: Duration) {
        if bytes < MIN_SAMPLE_BYTES || time.is_zero() {
            return;
        }
        let sample = bytes as f64 / time.as_secs_f64();
        self.0 = Some(self.0.map_or(sample, |rate| f64::midpoint(rate, sample)));
    }

    /// Forgets what was measured (the bandwidth limit changed).
    pub(super) fn reset(&mut self) {
        self.0 = None;
    }
}

/// What one upload can move: before the window ends, and in a whole window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    left: u64,
    whole: u64,
}

impl Scheduler<'_> {
    /// Sets the window uploads are in (`None`: no window, any time is allowed).
    pub fn set_window(&mut self, window: Option<UploadWindow>) {
        self.window = window;
    }

    /// What one upload can move in the window, if it ends and the rate is known.
    pub(super) fn window_budget(&self) -> Option<Budget> {
        let window = self.window?;
        let rate = match (self.throttle.rate(), self.throughput.0) {
            (Some(limit), Some(seen)) => (limit as f64).min(seen),
            (limit, seen) => limit.map(|l| l as f64).or(seen)?,
        };
        let left = Timestamp::now().until(window.ends);
        Some(Budget { left: (rate * left.as_secs_f64()) as u64, whole: (rate * window.length.as_secs_f64()) as u64 })
    }

    /// Why a job that does not fit waits, for `status` and `backup`.
    pub(super) fn too_big_reason(&self) -> Option<String> {
        let ends = self.window?.ends;
        let local = jiff::Timestamp::from_millisecond(ends.0)
            .map(|t| t.to_zoned(TimeZone::system()).strftime("%H:%M").to_string())
            .unwrap_or_default();
        Some(format!("too big to finish before the upload window closes at {local}"))
    }
}

/// Whether `pending` goes now: it finishes before the window ends, or could
/// not finish in any whole window either (then it may as well start).
pub(super) fn fits(pending: &PendingJob, budget: Option<Budget>) -> bool {
    budget.is_none_or(|b| pending.stat.size <= b.left || pending.stat.size > b.whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_on_the_minute_it_closes() {
        let windows = [Window::parse("00:00-23:59").expect("window")];
        let now = Timestamp::now();
        let window = upload_window(&windows, now).expect("a window");
        assert!(window.ends.0 >= now.0 || window.length.is_zero());
        assert_eq!(window.ends.0 % 60_000 % 1000, 0, "on a whole second");
        assert!(upload_window(&[], now).is_none());
    }

    #[test]
    fn only_large_uploads_measure_the_rate() {
        let mut t = Throughput::default();
        t.record(10_000, Duration::from_secs(1));
        assert!(t.0.is_none(), "a small file says little");
        t.record(4 << 20, Duration::from_secs(2));
        t.record(8 << 20, Duration::from_secs(2));
        assert_eq!(t.0, Some(f64::from(3 << 20)), "each new upload counts for half");
        t.reset();
        assert!(t.0.is_none());
    }
}
