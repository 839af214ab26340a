//! What the daemon asks of a running scheduler: one [`Command`] variant
//! per request, each carrying its reply channel, handled in the loop
//! between uploads so that every answer sees a consistent queue.

use std::collections::HashSet;

use tokio::sync::oneshot;

use super::{DrainReport, Pause, Scheduler, SchedulerStatus, UserPause};
use crate::catalog::CatalogError;
use crate::model::{JobId, Timestamp};
use crate::policy::{Deadline, Decision, HoldReason};

/// A request to the running scheduler; each carries its reply channel.
#[derive(Debug)]
pub enum Command {
    /// Report status.
    Status(oneshot::Sender<SchedulerStatus>),
    /// Stop uploads (in-flight ones stop at a chunk boundary, uncharged)
    /// until `until`, or until resumed.
    Pause {
        /// When the pause ends by itself.
        until: Option<Timestamp>,
        /// Acknowledgement.
        reply: oneshot::Sender<()>,
    },
    /// End a pause.
    Resume(oneshot::Sender<()>),
    /// The user signed in to this destination again: if it is held for
    /// that, it is tried again now.
    SignedIn {
        /// The destination's name.
        destination: String,
        /// Acknowledgement.
        reply: oneshot::Sender<()>,
    },
    /// Requeue these jobs now (all failed and retry-waiting ones when empty).
    Retry {
        /// Jobs to requeue.
        jobs: Vec<JobId>,
        /// Per job: requeued, or why not.
        reply: oneshot::Sender<Result<Vec<Result<JobId, String>>, String>>,
    },
    /// Reply once nothing is left to do now (queue empty, nothing running),
    /// or at once while paused.
    WaitIdle(oneshot::Sender<DrainReport>),
    /// The conditions policy changed its verdict: hold off (running uploads
    /// stop at a chunk boundary, uncharged) or run.
    Conditions(Decision),
    /// The machine joined a metered network with a data budget (`None`:
    /// left it); see [`Scheduler::set_metered`].
    Metered(Option<super::MeteredUse>),
    /// The system is going to sleep (`true`) or has woken (`false`); see
    /// [`Scheduler::set_asleep`].
    Sleep(bool),
    /// The bandwidth timetable crossed a boundary (bytes per second, `None`: unlimited).
    Bandwidth(Option<u64>),
    /// The allowed upload window uploads are in now (`None`: no windows).
    Window(Option<super::UploadWindow>),
    /// Queue these acknowledged jobs again: `photosync verify` found their
    /// objects missing or changed.
    Repair {
        /// The jobs.
        jobs: Vec<JobId>,
        /// The jobs queued, or why none could be.
        reply: oneshot::Sender<Result<Vec<JobId>, String>>,
    },
}

impl Scheduler<'_> {
    pub(super) fn handle(&mut self, command: Command) -> Result<(), CatalogError> {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status()?);
            }
            Command::Pause { until, reply } => {
                self.paused = Some(UserPause { ends: until.map(Deadline::at) });
                for flight in self.flights.values() {
                    flight.cancel.cancel();
                }
                tracing::info!(until = ?until.map(Timestamp::to_rfc3339), "paused");
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                self.paused = None;
                tracing::info!("resumed");
                let _ = reply.send(());
            }
            Command::SignedIn { destination, reply } => {
                let held = self.targets.values().filter(|t| t.name == destination).map(|t| t.id);
                for id in held.collect::<Vec<_>>() {
                    if self.breakers.get(&id).is_some_and(|b| b.for_user) {
                        tracing::info!(destination = %destination, "signed in again; uploads carry on");
                        self.breakers.remove(&id);
                    }
                }
                let _ = reply.send(());
            }
            Command::Retry { jobs, reply } => {
                let busy: HashSet<JobId> = self.sleeping.iter().map(|(_, p)| p.job.id).collect();
                let jobs: Vec<JobId> = jobs.into_iter().filter(|id| !busy.contains(id)).collect();
                match self.catalog.requeue(&jobs, Timestamp::now()) {
                    Ok(results) => {
                        // Requeued jobs start fresh: clear cool-downs so they are tried now.
                        self.breakers.clear();
                        self.reload()?;
                        let _ = reply.send(Ok(results));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Repair { jobs, reply } => match self.catalog.repair(&jobs, Timestamp::now()) {
                Ok(repaired) => {
                    self.reload()?;
                    let _ = reply.send(Ok(repaired));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            },
            Command::Conditions(decision) => self.apply_conditions(decision),
            Command::Sleep(asleep) => self.set_asleep(asleep),
            Command::Metered(using) => self.set_metered(using)?,
            Command::Bandwidth(rate) => self.set_bandwidth(rate),
            Command::Window(window) => self.set_window(window),
            Command::WaitIdle(reply) => {
                // Whatever discovery recorded before the request is part of the wait.
                self.load_new()?;
                self.idle_waiters.push(reply);
            }
        }
        Ok(())
    }

    /// Whether nothing is left to do now: no upload running or waiting for an
    /// in-run retry, and every queued job is held (or the user paused).
    fn is_idle(&self) -> bool {
        self.tasks.is_empty()
            && self.sleeping.is_empty()
            && (self.paused.is_some() || self.hold().is_some() || {
                // Jobs that wait for a window or a data budget cannot start now either.
                let (budget, room) = (self.window_budget(), self.metered_room());
                self.queue.iter().all(|p| {
                    self.is_held(p.job.destination_id)
                        || !super::window::fits(p, budget)
                        || !super::meter::fits(p, room)
                })
            })
    }

    pub(super) fn answer_idle_waiters(&mut self) -> Result<(), CatalogError> {
        if self.idle_waiters.is_empty() || !self.is_idle() {
            return Ok(());
        }
        let mut report = self.report.clone();
        report.holds = self.holds()?;
        for waiter in self.idle_waiters.drain(..) {
            let _ = waiter.send(report.clone());
        }
        Ok(())
    }
}

/// What the daemon sets on the scheduler from outside the loop: the
/// conditions policy's verdict, the user's pause, the bandwidth limit.
impl Scheduler<'_> {
    /// Applies the conditions policy's verdict: a hold stops running uploads
    /// at their next chunk (they return to the queue uncharged) and starts
    /// nothing new; `Run` lifts it.
    pub fn apply_conditions(&mut self, decision: Decision) {
        match decision {
            Decision::HoldOff(reason) => {
                tracing::info!("holding uploads: {reason}");
                for flight in self.flights.values() {
                    flight.cancel.cancel();
                }
                if reason == HoldReason::Sleeping {
                    // A sleep, a wake, or one nobody announced: connections
                    // open across it are likely dead.
                    self.reconnect();
                }
                self.policy_hold = Some(reason);
            }
            Decision::Run => {
                if self.policy_hold.take().is_some() {
                    tracing::info!("conditions allow uploads again");
                }
            }
        }
    }

    /// The system is going to sleep (`true`): running uploads stop at their
    /// next chunk and nothing starts, whatever the conditions or a
    /// `backup --now` say. On the wake (`false`) uploads stay held by the
    /// conditions until the watcher has read them again and they have held
    /// good for the hysteresis (it sends `Run`).
    pub fn set_asleep(&mut self, asleep: bool) {
        if asleep {
            tracing::info!("holding uploads: the system is going to sleep");
            for flight in self.flights.values() {
                flight.cancel.cancel();
            }
        } else if self.asleep {
            self.policy_hold = Some(HoldReason::Sleeping);
            self.reconnect();
        }
        self.asleep = asleep;
    }

    /// Has every destination drop its pooled connections.
    fn reconnect(&self) {
        for target in self.targets.values() {
            target.destination.reconnect();
        }
    }

    /// Why uploads are held by the system or the conditions, if they are.
    pub(super) fn hold(&self) -> Option<&HoldReason> {
        if self.asleep { Some(&HoldReason::Sleeping) } else { self.policy_hold.as_ref() }
    }

    /// The user's pause in force, if any.
    pub fn pause(&self) -> Option<Pause> {
        self.paused.map(|p| Pause { until: p.ends.map(Deadline::wall) })
    }

    /// Puts a pause back in force (after a reload); one whose time has
    /// passed is over.
    pub fn restore_pause(&mut self, pause: Option<Pause>) {
        let now = Timestamp::now();
        self.paused = pause
            .filter(|p| p.until.is_none_or(|until| until > now))
            .map(|p| UserPause { ends: p.until.map(Deadline::at) });
    }

    /// Tells `uploading` from now on whether uploads are in flight.
    pub fn report_uploading(&mut self, uploading: tokio::sync::watch::Sender<bool>) {
        self.uploading = Some(uploading);
    }

    /// Has `gate` hold a scan back while the queue is full of jobs waiting
    /// for uploads that run ([`gate`](crate::discover::gate)).
    pub fn gate_scan(&mut self, gate: crate::discover::gate::ScanGate) {
        self.scan_gate = Some(gate);
    }

    /// Sets the shared upload rate limit (bytes per second; `None`: unlimited).
    pub fn set_bandwidth(&mut self, rate: Option<u64>) {
        if self.throttle.rate() != rate {
            self.throughput.reset();
        }
        self.throttle.set_rate(rate);
    }
}
