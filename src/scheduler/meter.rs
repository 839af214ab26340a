//! The data budget on a metered link (`metered_budget`): while the machine
//! is on a metered network, the bytes uploads send are counted against that
//! network's budget for the period, durably (every second, and whenever an
//! upload ends), so neither a restart nor a kill -9 resets the count. A
//! file starts only if it fits in what is left (counting what running
//! uploads may still send); one that does not waits, and smaller ones go
//! first. `backup --allow-metered` lifts the limit for its run; what it
//! sends is counted too.

use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::BinaryBytes;
use tokio::time::Instant;

use super::Scheduler;
use crate::catalog::{CatalogError, PendingJob};
use crate::conditions::MeteredLink;
use crate::model::{JobId, Timestamp};
use crate::policy::{Budget, Cycle, Deadline};

/// How often the bytes sent are written down while uploads run.
pub(super) const FLUSH: Duration = Duration::from_secs(1);

/// A metered network uploads run on, and whether its budget binds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredUse {
    /// The network.
    pub link: MeteredLink,
    /// `false`: count, but let everything through (`--allow-metered`).
    pub enforce: bool,
}

/// The budget of the metered network in use.
#[derive(Debug, Clone)]
pub(super) struct Meter {
    using: MeteredUse,
    budget: Budget,
    cycle: Cycle,
    /// When the period ends: local midnight of its reset day.
    ends: Option<Deadline>,
    /// Bytes counted in this period, as the catalog has them.
    used: u64,
}

/// How the budget of the metered network in use stands, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    /// The network's name.
    pub network: String,
    /// Bytes sent over it this period.
    pub used: u64,
    /// Bytes allowed per period.
    pub limit: u64,
    /// `day`, `week` or `month`.
    pub period: &'static str,
    /// The day the count starts again.
    pub resets: jiff::civil::Date,
    /// Whether the budget binds uploads now (not while `--allow-metered` runs).
    pub enforced: bool,
}

impl BudgetStatus {
    /// Bytes left this period.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

fn today() -> jiff::civil::Date {
    jiff::Zoned::now().date()
}

/// Local midnight at the start of `day`.
fn midnight(day: jiff::civil::Date) -> Option<Deadline> {
    let at = day.to_zoned(jiff::tz::TimeZone::system()).ok()?.timestamp();
    Some(Deadline::at(Timestamp(at.as_millisecond())))
}

/// What `flight` sent since it was last counted, now counted.
fn uncounted(flight: &mut super::Flight) -> u64 {
    let now = flight.sent.load(Ordering::Relaxed);
    let sent = now.saturating_sub(flight.counted);
    flight.counted = now;
    sent
}

impl Scheduler<'_> {
    /// The machine is on metered network `using` (`None`: not metered, or
    /// no budget is set): what was sent until now is written down for the
    /// network it went over, and the count goes on for the new one.
    pub fn set_metered(&mut self, using: Option<MeteredUse>) -> Result<(), CatalogError> {
        self.flush_meter()?;
        let Some(budget) = self.settings.budget else { return Ok(()) };
        if self.meter.as_ref().map(|m| &m.using) == using.as_ref() {
            return Ok(());
        }
        self.meter = match using {
            None => None,
            Some(using) => {
                let cycle = budget.cycle(today());
                let used = self.catalog.metered_usage(&using.link.key, cycle.start)?;
                let meter = Meter { using, budget, ends: midnight(cycle.resets), cycle, used };
                tracing::info!("on a metered network: {}", meter.describe());
                Some(meter)
            }
        };
        self.meter_due = (self.meter.is_some() && !self.flights.is_empty()).then(|| Instant::now() + FLUSH);
        self.fit_running();
        Ok(())
    }

    /// Stops running uploads, largest first (back to the queue, uncharged,
    /// their progress kept), until what they may still send fits in the
    /// budget: they started on an unmetered link, or under `--allow-metered`.
    fn fit_running(&self) {
        let Some(meter) = self.meter.as_ref().filter(|m| m.using.enforce) else { return };
        let left = meter.budget.bytes.saturating_sub(meter.used);
        let mut running: Vec<(u64, JobId)> = self.flights.iter().map(|(id, f)| (f.to_send(), *id)).collect();
        running.sort_unstable_by(|a, b| b.cmp(a));
        let mut total: u64 = running.iter().map(|(bytes, _)| bytes).sum();
        for (bytes, job) in running {
            if total <= left {
                break;
            }
            if let Some(flight) = self.flights.get(&job) {
                tracing::info!("stopping an upload that does not fit in the data budget: {}", meter.describe());
                flight.cancel.cancel();
            }
            total -= bytes;
        }
    }

    /// Starts the budget's next period when its reset day has come.
    pub(super) fn roll_meter(&mut self) -> Result<(), CatalogError> {
        let Some(meter) = &mut self.meter else { return Ok(()) };
        let today = today();
        if today >= meter.cycle.resets {
            meter.cycle = meter.budget.cycle(today);
            meter.used = self.catalog.metered_usage(&meter.using.link.key, meter.cycle.start)?;
            tracing::info!("a new data budget period began: {}", meter.describe());
        }
        // Set afresh even when the day has not come by the calendar (the
        // wall clock was stepped back): the timer fires again at midnight.
        meter.ends = midnight(meter.cycle.resets);
        Ok(())
    }

    /// When the budget's period ends, if one is in use.
    pub(super) fn meter_ends(&self) -> Option<Deadline> {
        self.meter.as_ref().and_then(|m| m.ends)
    }

    /// Writes down what running uploads sent since the last count, against
    /// the metered network in use (on an unmetered one it is not counted).
    pub(super) fn flush_meter(&mut self) -> Result<(), CatalogError> {
        let sent = self.flights.values_mut().map(uncounted).sum();
        self.count_metered(sent)?;
        if self.meter.is_some() {
            self.meter_due = (!self.flights.is_empty()).then(|| Instant::now() + FLUSH);
        }
        Ok(())
    }

    /// Writes down what the upload of `job`, which has ended, sent since
    /// the last count. The others are counted at the next flush, as before:
    /// counting every running upload at each one's end went over a batch
    /// of 256 for each of its jobs.
    pub(super) fn flush_meter_of(&mut self, job: JobId) -> Result<(), CatalogError> {
        let sent = self.flights.get_mut(&job).map_or(0, uncounted);
        self.count_metered(sent)
    }

    /// Adds `sent` bytes to the metered network's count, if on one.
    fn count_metered(&mut self, sent: u64) -> Result<(), CatalogError> {
        if self.meter.is_none() {
            return Ok(());
        }
        self.roll_meter()?;
        let Some(meter) = &mut self.meter else { return Ok(()) };
        if sent > 0 {
            let link = &meter.using.link;
            meter.used = self.catalog.add_metered_usage(&link.key, &link.name, meter.cycle.start, sent)?;
        }
        Ok(())
    }

    /// What uploads may still start sending: the budget left, less what
    /// running ones may still send. `None` when no budget binds them.
    pub(super) fn metered_room(&self) -> Option<u64> {
        let meter = self.meter.as_ref().filter(|m| m.using.enforce)?;
        let running: u64 = self.flights.values().map(super::Flight::to_send).sum();
        Some(meter.budget.bytes.saturating_sub(meter.used).saturating_sub(running))
    }

    /// Why a file that does not fit in the budget waits.
    pub(super) fn over_budget_reason(&self) -> Option<String> {
        self.meter.as_ref().map(|m| format!("waits for the data budget: {}", m.describe()))
    }

    /// How the budget stands, for `status`.
    pub(super) fn budget_status(&self) -> Option<BudgetStatus> {
        self.meter.as_ref().map(|m| BudgetStatus {
            network: m.using.link.name.clone(),
            used: m.used,
            limit: m.budget.bytes,
            period: m.budget.period.as_str(),
            resets: m.cycle.resets,
            enforced: m.using.enforce,
        })
    }
}

/// Whether `pending` fits in the budget's `room`.
pub(super) fn fits(pending: &PendingJob, room: Option<u64>) -> bool {
    room.is_none_or(|room| pending.stat.size <= room)
}

impl Meter {
    /// E.g. "1.20 GiB of 2.00 GiB used on 'Pixel hotspot' this month, resets 1 Jan"
    /// (the name escaped: whoever runs a network names it).
    fn describe(&self) -> String {
        format!(
            "{} of {} used on '{}' this {}, resets {}",
            BinaryBytes(self.used),
            BinaryBytes(self.budget.bytes),
            self.using.link.name.escape_debug(),
            self.budget.period.as_str(),
            self.cycle.resets.strftime("%-d %b")
        )
    }
}
