//! The requests sent today, counted against the project's daily quota
//! ("All requests per day": 10,000 by default, uploads included; it resets
//! at midnight Pacific time,
//! <https://developers.google.com/photos/overview/api-limits-quotas>).
//! Kept in the catalog so that a restart, or a `backup` run beside the
//! daemon, counts on from where the day stands; written every
//! [`WRITE_EVERY`] requests (and with each batch of media items), not on
//! every one, so that uploads never wait on the catalog for a count.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::destination::{Quota, SessionStore};

const KEY: &str = "requests";

/// Requests counted in memory before the count is written down.
const WRITE_EVERY: u64 = 20;

/// The day's count, as kept in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Day {
    /// The date in Los Angeles (`YYYY-MM-DD`).
    date: String,
    /// Requests sent.
    requests: u64,
    /// Media items made.
    items: u64,
}

/// Counts one destination's requests per Pacific day.
pub(super) struct Requests {
    notes: Arc<dyn SessionStore>,
    scope: String,
    limit: u64,
    /// The last count written or read, for `status` when the catalog is busy.
    seen: Mutex<Day>,
    /// Requests counted but not written down yet.
    unwritten: Mutex<u64>,
}

impl Requests {
    pub(super) fn new(notes: Arc<dyn SessionStore>, scope: &str, limit: u64) -> Requests {
        Requests { notes, scope: scope.to_owned(), limit, seen: Mutex::default(), unwritten: Mutex::default() }
    }

    /// Counts one request.
    pub(super) fn sent(&self) {
        let due = {
            let mut unwritten = self.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
            *unwritten += 1;
            (*unwritten >= WRITE_EVERY).then(|| std::mem::take(&mut *unwritten))
        };
        if let Some(requests) = due {
            self.add(requests, 0);
        }
    }

    /// Counts `items` media items made (and writes the count down).
    pub(super) fn made(&self, items: u64) {
        let requests = std::mem::take(&mut *self.unwritten.lock().unwrap_or_else(PoisonError::into_inner));
        if items > 0 || requests > 0 {
            self.add(requests, items);
        }
    }

    fn add(&self, requests: u64, items: u64) {
        let today = pacific_today();
        let changed = self.notes.update_note(&self.scope, KEY, &mut |old| {
            let mut day = old.and_then(|v| serde_json::from_value::<Day>(v).ok()).unwrap_or_default();
            if day.date != today {
                day = Day { date: today.clone(), ..Day::default() };
            }
            day.requests += requests;
            day.items += items;
            serde_json::to_value(day).ok()
        });
        match changed {
            Ok(Some(value)) => {
                if let Ok(day) = serde_json::from_value(value) {
                    *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = day;
                }
            }
            Ok(None) => {}
            // Only a count: the upload goes on.
            Err(e) => tracing::warn!("cannot count a Google request in the catalog: {e}"),
        }
    }

    /// How the day stands.
    pub(super) fn quota(&self) -> Quota {
        let today = pacific_today();
        let kept = self.notes.note(&self.scope, KEY).ok().flatten().and_then(|v| serde_json::from_value::<Day>(v).ok());
        let day = kept.unwrap_or_else(|| self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone());
        let day = if day.date == today { day } else { Day::default() };
        let unwritten = *self.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
        Quota {
            used: day.requests + unwritten,
            limit: self.limit,
            items: day.items,
            resets_in: until_pacific_midnight(),
        }
    }
}

/// Today in Los Angeles, where Google's day begins and ends.
fn pacific_today() -> String {
    pacific_now().date().to_string()
}

fn pacific_now() -> jiff::Zoned {
    let now = jiff::Zoned::now();
    now.in_tz("America/Los_Angeles").unwrap_or_else(|_| {
        // No time zone database: Pacific standard time is close enough.
        now.with_time_zone(jiff::tz::TimeZone::fixed(jiff::tz::offset(-8)))
    })
}

/// How long until the next midnight in Los Angeles, when Google's daily
/// quotas reset.
pub(super) fn until_pacific_midnight() -> Duration {
    let fallback = Duration::from_hours(1);
    let now = pacific_now();
    let Ok(tomorrow) = now.date().tomorrow() else { return fallback };
    let Ok(midnight) = tomorrow.to_zoned(now.time_zone().clone()) else { return fallback };
    let seconds = midnight.timestamp().as_second() - now.timestamp().as_second();
    Duration::from_secs(u64::try_from(seconds).unwrap_or(3600).max(60))
}

impl Drop for Requests {
    fn drop(&mut self) {
        // What was counted since the last write.
        self.made(0);
    }
}
