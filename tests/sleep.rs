//! Around a system sleep (Linux): logind's delay inhibitor, uploads stopped
//! before the sleep, conditions read again after the wake. logind is
//! python-dbusmock's template on a private bus, which hands out real
//! inhibitor fds and lists them until they are closed.

use std::time::Duration;

use photosync::conditions::sleep::{SleepEvent, guard_on};
use tokio::sync::{mpsc, watch};

use crate::harness::wait_until;
use crate::system_bus::{
    SLEEP_DELAY, SystemBus, daemon_on_the_bus, daemon_on_the_bus_with, job_state, upload_under_way,
};

/// The sleep guard on its own, on `bus`: what it is told about uploads,
/// and what it reports.
struct Guard {
    uploading: watch::Sender<bool>,
    events: mpsc::Receiver<SleepEvent>,
    runtime: tokio::runtime::Runtime,
}

impl Guard {
    fn start(bus: &SystemBus) -> Guard {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (uploading, seen) = watch::channel(false);
        let (sender, events) = mpsc::channel(4);
        let address = bus.address.clone();
        runtime.spawn(async move {
            let connection = zbus::connection::Builder::address(address.as_str())
                .expect("bus address")
                .build()
                .await
                .expect("connect to the bus");
            guard_on(&connection, seen, sender).await;
        });
        Guard { uploading, events, runtime }
    }

    fn next_event(&mut self) -> SleepEvent {
        let event =
            self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), self.events.recv()).await });
        event.expect("an event within 10 s").expect("the guard is running")
    }
}

/// Regression: the inhibitor was dropped the moment logind announced the
/// sleep, before the uploads had stopped, so the system could sleep with
/// an upload cut anywhere. It must be kept until they have stopped (or half
/// of `InhibitDelayMaxUSec` has passed), and no new one may be taken until
/// the wake.
#[test]
fn the_sleep_inhibitor_was_dropped_before_the_uploads_stopped() {
    let bus = SystemBus::start();
    bus.set_sleep_delay(SLEEP_DELAY);
    let mut guard = Guard::start(&bus);
    guard.uploading.send_replace(true);
    wait_until(Duration::from_secs(10), "a delay inhibitor is held", || bus.inhibitors() == ["sleep/photosync/delay"]);

    bus.prepare_for_sleep(true);
    assert_eq!(guard.next_event(), SleepEvent::Sleeping);
    // Uploads still running, and far from the deadline: the lock stays.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(1) {
        assert_eq!(bus.inhibitors(), ["sleep/photosync/delay"], "held until the uploads stop");
    }
    guard.uploading.send_replace(false);
    wait_until(SLEEP_DELAY / 4, "the inhibitor is released once they stop", || bus.inhibitors().is_empty());
    // An upload starting before the wake takes no new lock.
    guard.uploading.send_replace(true);
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(500) {
        assert!(bus.inhibitors().is_empty(), "no lock between the announcement and the wake");
    }
    bus.prepare_for_sleep(false);
    assert_eq!(guard.next_event(), SleepEvent::Woke);
    wait_until(Duration::from_secs(10), "the lock is taken again after the wake", || {
        bus.inhibitors() == ["sleep/photosync/delay"]
    });
}

/// Uploads that do not stop in time do not keep the system awake: the lock
/// goes after half of logind's `InhibitDelayMaxUSec`.
#[test]
fn uploads_that_do_not_stop_lose_the_inhibitor_after_half_the_delay() {
    let bus = SystemBus::start();
    bus.set_sleep_delay(Duration::from_secs(4));
    let mut guard = Guard::start(&bus);
    guard.uploading.send_replace(true);
    wait_until(Duration::from_secs(10), "a delay inhibitor is held", || bus.inhibitors() == ["sleep/photosync/delay"]);
    bus.prepare_for_sleep(true);
    assert_eq!(guard.next_event(), SleepEvent::Sleeping);
    let announced = std::time::Instant::now();
    wait_until(Duration::from_secs(4), "the inhibitor is released", || bus.inhibitors().is_empty());
    assert!(announced.elapsed() >= Duration::from_millis(1500), "released after {:?}", announced.elapsed());
}

/// Around a sleep: a delay inhibitor is held only while an upload runs; when
/// logind announces the sleep the upload stops at a chunk (queued again, no
/// attempt charged) and the inhibitor is gone within half of logind's
/// delay; after the wake the conditions are read again and, after the
/// hysteresis, the upload carries on to the end. Idle, nothing is held.
#[test]
fn uploads_stop_before_the_system_sleeps_and_resume_after_it_wakes() {
    let bus = SystemBus::start();
    let (env, _daemon) = daemon_on_the_bus(&bus);
    wait_until(Duration::from_secs(30), "the daemon is up", || env.status()["state"] == "idle");
    assert!(bus.inhibitors().is_empty(), "nothing is held while idle");
    upload_under_way(&env, 5);
    wait_until(Duration::from_secs(10), "a delay inhibitor is held", || bus.inhibitors() == ["sleep/photosync/delay"]);

    let announced = std::time::Instant::now();
    bus.prepare_for_sleep(true);
    wait_until(SLEEP_DELAY, "the inhibitor is released", || bus.inhibitors().is_empty());
    assert!(announced.elapsed() < SLEEP_DELAY / 4, "released after {:?}", announced.elapsed());
    // Released once the upload had stopped and its progress was recorded.
    assert_eq!(job_state(&env), ("queued".into(), "sleep".into(), 0), "queued again, no attempt charged");

    let woke = std::time::Instant::now();
    bus.prepare_for_sleep(false);
    wait_until(Duration::from_secs(30), "the upload runs again", || job_state(&env).0 == "running");
    assert!(woke.elapsed() >= Duration::from_millis(900), "resumed only after the hysteresis");
    wait_until(Duration::from_mins(1), "the upload completes", || job_state(&env).0 == "acknowledged");
    assert_eq!(job_state(&env).2, 0, "still no attempt charged");
    // It went on from the progress recorded before the sleep.
    let sent = env.status()["scheduler"]["totals"]["bytes_uploaded"].as_u64().expect("bytes sent");
    assert!(sent < 12 * 1024 * 1024, "the attempt after the wake sent {sent} bytes: it started over");
    wait_until(Duration::from_secs(10), "nothing is held once idle", || bus.inhibitors().is_empty());
}

/// A laptop that went to sleep on Wi-Fi and wakes on a metered hotspot:
/// after the wake the conditions are read again before anything uploads,
/// so the upload stays queued (waiting on the network) through the
/// hysteresis and beyond, and goes on only once the link is unmetered.
#[test]
fn a_link_that_turned_metered_during_a_sleep_holds_uploads_after_the_wake() {
    let bus = SystemBus::start();
    bus.set_metered(2);
    let (env, _daemon) = daemon_on_the_bus(&bus);
    upload_under_way(&env, 6);
    bus.prepare_for_sleep(true);
    wait_until(Duration::from_secs(10), "the upload is queued again", || job_state(&env).0 == "queued");
    bus.set_metered(1);
    bus.prepare_for_sleep(false);
    wait_until(Duration::from_secs(10), "the metered link is the reason now", || {
        env.status()["reason"] == "metered connection (NetworkManager)"
    });
    // Well past the hysteresis, the upload has not started again.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(2500) {
        let (state, _, attempts) = job_state(&env);
        assert_eq!((state.as_str(), attempts), ("queued", 0), "nothing uploads on the metered link");
        std::thread::sleep(Duration::from_millis(20));
    }
    bus.set_metered(2);
    wait_until(Duration::from_mins(1), "the upload completes once unmetered", || job_state(&env).0 == "acknowledged");
    assert_eq!(job_state(&env).2, 0, "no attempt charged");
}

/// Regression: `backup --now` during a sleep's announcement lifted the
/// sleep hold (its verdict went straight to the scheduler), so uploads
/// started again as the system went to sleep. Only the wake lifts it.
#[test]
fn backup_now_lifted_the_hold_of_a_coming_sleep() {
    let bus = SystemBus::start();
    let (env, _daemon) = daemon_on_the_bus(&bus);
    upload_under_way(&env, 7);
    bus.prepare_for_sleep(true);
    wait_until(Duration::from_secs(10), "the upload is queued again", || job_state(&env).0 == "queued");
    let out = env.run(["backup", "--now", "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(out.status.code(), Some(75), "held, not done: {summary}");
    assert_eq!(summary["uploaded"], 0, "{summary}");
    assert_eq!(job_state(&env), ("queued".into(), "sleep".into(), 0), "nothing ran during the sleep");
    assert_eq!(env.status()["reason"], "the system is going to sleep (or has just woken)");
    bus.prepare_for_sleep(false);
    wait_until(Duration::from_mins(1), "the upload completes after the wake", || job_state(&env).0 == "acknowledged");
}

/// `keep_awake = "while-uploading"`: idle sleep is held off (logind's
/// `idle` inhibitor, a `block` lock that never covers a lid or a requested
/// sleep) only while an upload runs on mains: not on battery, not once the
/// queue has drained.
#[test]
fn keep_awake_holds_idle_sleep_off_only_while_uploading_on_mains() {
    const IDLE: &str = "idle/photosync/block";
    let bus = SystemBus::start();
    let policy = "keep_awake = \"while-uploading\"\non_battery = \"allow\"";
    let (env, _daemon) = daemon_on_the_bus_with(&bus, policy);
    wait_until(Duration::from_secs(30), "the daemon is up", || env.status()["state"] == "idle");
    assert!(!bus.inhibitors().iter().any(|i| i == IDLE), "nothing is held while idle");
    upload_under_way(&env, 8);
    wait_until(Duration::from_secs(10), "idle sleep is held off", || bus.inhibitors().iter().any(|i| i == IDLE));
    assert!(env.status()["keeping_awake_until"].is_string(), "status says so");

    bus.set_on_battery(true);
    wait_until(Duration::from_secs(10), "released on battery", || !bus.inhibitors().iter().any(|i| i == IDLE));
    assert_eq!(job_state(&env).0, "running", "the upload goes on (battery use is allowed)");
    bus.set_on_battery(false);
    wait_until(Duration::from_secs(10), "held again on mains", || bus.inhibitors().iter().any(|i| i == IDLE));

    wait_until(Duration::from_mins(1), "the upload completes", || job_state(&env).0 == "acknowledged");
    wait_until(Duration::from_secs(10), "released once idle", || bus.inhibitors().is_empty());
    assert!(env.status()["keeping_awake_until"].is_null());
}

/// `keep_awake_max` bounds how long idle sleep is held off in one go.
#[test]
fn keep_awake_lets_go_after_keep_awake_max() {
    let bus = SystemBus::start();
    let policy = "keep_awake = \"while-uploading\"\nkeep_awake_max = \"2s\"";
    let (env, _daemon) = daemon_on_the_bus_with(&bus, policy);
    upload_under_way(&env, 9);
    let held = || bus.inhibitors().iter().any(|i| i == "idle/photosync/block");
    wait_until(Duration::from_secs(10), "idle sleep is held off", held);
    wait_until(Duration::from_secs(10), "released after keep_awake_max", || !held());
    assert_eq!(job_state(&env).0, "running", "while the upload still runs");
}
