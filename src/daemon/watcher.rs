//! The conditions watcher: reads power, network and the time every
//! `poll_interval` (at once when the system announces a change) and tells
//! the scheduler when the policy's verdict changes (holds at once, resumes
//! only after the hysteresis time of good conditions), when the bandwidth
//! timetable or the allowed window crosses a boundary, and when the metered
//! network with a data budget changes. The verdict takes the overrides of
//! a running `backup --now` into account.
//!
//! Around a sleep: a coming sleep holds everything at once; after the wake
//! (announced, or seen as the wall clock jumping ahead of the monotonic
//! one) the conditions are read again at once, and work resumes only once
//! they have held good for the hysteresis time.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::backup::metered_use;
use crate::conditions;
use crate::conditions::sleep::SleepEvent;
use crate::config::PolicyConfig;
use crate::model::Timestamp;
use crate::policy::{ClockJumps, Conditions, Decision, HoldReason, Hysteresis, Overrides, Power, decide};
use crate::scheduler::{Command, MeteredUse, UploadWindow, upload_window};

/// How often the wall and monotonic clocks are compared, to notice a sleep
/// nobody announced.
const CLOCK_CHECK: Duration = Duration::from_secs(10);

/// The scheduler is gone: the watcher ends.
struct Gone;

/// The watcher's state: what it last told the scheduler.
pub(super) struct Watcher {
    policy: PolicyConfig,
    overrides: watch::Receiver<Overrides>,
    commands: mpsc::Sender<Command>,
    /// Told whether the machine is on mains power (for `keep_awake`).
    mains: watch::Sender<bool>,
    start: Instant,
    sent: Decision,
    state: Hysteresis,
    rate: Option<u64>,
    window: Option<UploadWindow>,
    metered: Option<MeteredUse>,
    asleep: bool,
}

impl Watcher {
    /// A watcher that starts from what the scheduler was told: the verdict
    /// on `first`, and `metered`.
    pub(super) fn new(
        policy: PolicyConfig,
        first: &Conditions,
        metered: Option<MeteredUse>,
        overrides: watch::Receiver<Overrides>,
        commands: mpsc::Sender<Command>,
        mains: watch::Sender<bool>,
    ) -> Watcher {
        let sent = decide(first, &policy.rules, Overrides::default());
        Watcher {
            state: Hysteresis::new(sent.clone()),
            sent,
            rate: policy.bandwidth.limit_at(first.minute_of_day),
            window: upload_window(&policy.rules.windows, Timestamp::now()),
            policy,
            overrides,
            commands,
            mains,
            start: Instant::now(),
            metered,
            asleep: false,
        }
    }

    /// Watches until the scheduler is gone; `sleep_events` tell of sleeps
    /// and wakes.
    pub(super) async fn run(mut self, sleep_events: Option<mpsc::Receiver<SleepEvent>>) {
        let _ = self.watch(sleep_events).await;
    }

    async fn watch(&mut self, mut sleep_events: Option<mpsc::Receiver<SleepEvent>>) -> Result<(), Gone> {
        // Announced changes (system bus signals, Darwin notifications) wake
        // the loop at once; polling covers the rest.
        let mut changes = conditions::changes().await;
        let mut clocks = ClockJumps::new(Timestamp::now(), self.start.elapsed());
        let poll = self.policy.poll_interval;
        loop {
            let hysteresis = self.policy.rules.hysteresis;
            let pending = self.state.pending_until(hysteresis).map(|at| at.saturating_sub(self.start.elapsed()));
            let wait = pending.map_or(poll, |p| p.min(poll));
            let due = Instant::now() + wait;
            // The clocks are compared more often than the conditions are read.
            let mut clock_check = false;
            tokio::select! {
                () = tokio::time::sleep(wait.min(CLOCK_CHECK)) => clock_check = Instant::now() < due,
                event = next_change(&mut changes) => {
                    if event.is_none() {
                        changes = None;
                    }
                }
                event = recv_sleep(&mut sleep_events) => match event {
                    Some(SleepEvent::Sleeping) => {
                        self.asleep = true;
                        self.hold_for_sleep().await?;
                        continue;
                    }
                    // Power and network are unknown after a wake: hold until
                    // what is read now has held good for the hysteresis.
                    Some(SleepEvent::Woke) => {
                        self.asleep = false;
                        self.hold_for_sleep().await?;
                    }
                    None => {
                        self.asleep = false;
                        sleep_events = None;
                    }
                },
                still_open = self.overrides.changed() => {
                    if still_open.is_err() {
                        return Err(Gone);
                    }
                    if !self.asleep {
                        self.overridden().await?;
                    }
                    continue;
                }
            }
            if let Some(ahead) = clocks.check(Timestamp::now(), self.start.elapsed()) {
                // A sleep nobody announced (or a clock stepped forward): hold
                // until the conditions read now have held good for the hysteresis.
                tracing::info!(
                    "the wall clock jumped {} ahead: reading the conditions again",
                    humantime::format_duration(ahead)
                );
                self.asleep = false;
                self.hold_for_sleep().await?;
            } else if clock_check {
                continue;
            }
            if !self.asleep {
                self.read().await?;
            }
        }
    }

    async fn send(&self, command: Command) -> Result<(), Gone> {
        self.commands.send(command).await.map_err(|_| Gone)
    }

    /// Holds uploads for a sleep (or after a wake, until the conditions
    /// read next have held good for the hysteresis).
    async fn hold_for_sleep(&mut self) -> Result<(), Gone> {
        self.sent = Decision::HoldOff(HoldReason::Sleeping);
        self.state = Hysteresis::new(self.sent.clone());
        self.send(Command::Conditions(self.sent.clone())).await
    }

    /// The overrides changed: whoever set them told the scheduler; judge by
    /// them from now on.
    async fn overridden(&mut self) -> Result<(), Gone> {
        let now = conditions::read(&self.policy.probe).await;
        let overrides = *self.overrides.borrow();
        self.tell_metered(&now, overrides).await?;
        self.sent = decide(&now, &self.policy.rules, overrides);
        self.state = Hysteresis::new(self.sent.clone());
        self.window = self.window_now(overrides);
        self.send(Command::Window(self.window)).await
    }

    /// Reads the conditions and tells the scheduler what changed.
    async fn read(&mut self) -> Result<(), Gone> {
        let conditions = conditions::read(&self.policy.probe).await;
        let on_mains = conditions.power == Power::External;
        self.mains.send_if_modified(|was| std::mem::replace(was, on_mains) != on_mains);
        let overrides = *self.overrides.borrow();
        self.tell_metered(&conditions, overrides).await?;
        let limit = self.policy.bandwidth.limit_at(conditions.minute_of_day);
        if limit != self.rate {
            self.rate = limit;
            self.send(Command::Bandwidth(limit)).await?;
        }
        let window = self.window_now(overrides);
        if window != self.window {
            self.window = window;
            self.send(Command::Window(window)).await?;
        }
        let raw = decide(&conditions, &self.policy.rules, overrides);
        let effective = self.state.update(raw, self.start.elapsed(), self.policy.rules.hysteresis).clone();
        if effective != self.sent {
            self.sent = effective.clone();
            self.send(Command::Conditions(effective)).await?;
        }
        Ok(())
    }

    /// The allowed window uploads are in now (overrides that ignore the
    /// window leave none to fit in).
    fn window_now(&self, overrides: Overrides) -> Option<UploadWindow> {
        upload_window(&self.policy.rules.windows, Timestamp::now()).filter(|_| !overrides.ignore_power_and_window)
    }

    /// Tells the scheduler when the metered network with a data budget
    /// that uploads run on changes (joined, left, another one).
    async fn tell_metered(&mut self, conditions: &Conditions, overrides: Overrides) -> Result<(), Gone> {
        let now = metered_use(&self.policy, conditions, overrides, self.metered.as_ref()).await;
        if now == self.metered {
            return Ok(());
        }
        self.metered.clone_from(&now);
        self.send(Command::Metered(now)).await
    }
}

async fn recv_sleep(events: &mut Option<mpsc::Receiver<SleepEvent>>) -> Option<SleepEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_change(changes: &mut Option<impl futures_util::Stream<Item = ()> + Unpin>) -> Option<()> {
    use futures_util::StreamExt as _;
    match changes {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
