//! The conditions policy with a real process: a fake sysfs power-supply
//! tree stands in for the laptop's battery.

use std::fs;
use std::time::Duration;

use crate::harness::{Env, make_library, tree, wait_until};
use crate::system_bus::{SystemBus, daemon_on_the_bus, job_state, upload_under_way};

pub(crate) fn with_policy(env: &Env, policy: &str) {
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", &format!("[policy]\n{policy}\n"))).expect("config");
}

fn backup_with(env: &Env, flags: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["backup", "--json"];
    args.extend(flags);
    let out = env.run(args);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    (out.status.code().expect("code"), summary)
}

fn reasons(summary: &serde_json::Value) -> Vec<String> {
    summary["deferrals"]
        .as_array()
        .expect("deferrals")
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn on_battery_a_backup_defers_with_the_reason_and_now_overrides() {
    let env = Env::new();
    env.set_power(true, 41);
    let media = make_library(&env.source, 3, 1_000);
    let (code, summary) = backup_with(&env, &[]);
    assert_eq!(code, 75, "{summary}");
    assert_eq!(summary["deferred"], media.len());
    assert_eq!(reasons(&summary), ["on battery (41%)"]);
    assert!(tree(&env.dest).is_empty());
    let waiting: String =
        env.catalog().query_row("SELECT DISTINCT waiting_on FROM jobs", [], |r| r.get(0)).expect("waiting_on");
    assert_eq!(waiting, "nothing", "held jobs were never started");

    let (code, summary) = backup_with(&env, &["--now"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(tree(&env.dest).len(), media.len());
}

#[test]
fn battery_use_can_be_allowed_above_a_minimum_charge() {
    let env = Env::new();
    with_policy(&env, "on_battery = \"allow\"\nmin_battery_percent = 50");
    env.set_power(true, 41);
    make_library(&env.source, 1, 1_000);
    let (code, summary) = backup_with(&env, &[]);
    assert_eq!(code, 75, "{summary}");
    assert_eq!(reasons(&summary), ["on battery 41% < 50%"]);
    env.set_power(true, 80);
    assert_eq!(backup_with(&env, &[]).0, 0);
}

#[test]
fn outside_the_allowed_window_work_waits() {
    let env = Env::new();
    // A one-minute window twelve hours from now.
    let now = jiff::Zoned::now();
    let hour = (now.hour() + 12) % 24;
    let window = format!("{hour:02}:00-{hour:02}:01");
    with_policy(&env, &format!("windows = [\"{window}\"]"));
    make_library(&env.source, 1, 1_000);
    let (code, summary) = backup_with(&env, &[]);
    assert_eq!(code, 75, "{summary}");
    assert_eq!(reasons(&summary), [format!("outside window {}", window.replace('-', "–"))]);
    assert_eq!(backup_with(&env, &["--ignore-conditions"]).0, 0);
}

#[test]
fn the_daemon_holds_on_battery_and_resumes_after_the_hysteresis() {
    let env = Env::new();
    env.write_config("settle = \"200ms\"");
    with_policy(&env, "poll_interval = \"100ms\"\nhysteresis = \"500ms\"");
    env.set_power(true, 30);
    let daemon = env.start_daemon();
    make_library(&env.source, 2, 1_000);
    wait_until(Duration::from_secs(30), "the new files are discovered and held", || {
        let status = env.status();
        status["state"] == "holding" && env.count_jobs("queued") == 3
    });
    let status = env.status();
    assert_eq!(status["reason"], "on battery (30%)", "{status}");
    assert!(tree(&env.dest).is_empty());

    env.set_power(false, 31);
    wait_until(Duration::from_secs(30), "uploads resume on mains power", || env.count_jobs("acknowledged") == 3);
    let attempts: i64 = env.catalog().query_row("SELECT SUM(attempts) FROM jobs", [], |r| r.get(0)).expect("sum");
    assert_eq!(attempts, 0, "holding charges no attempt");

    env.set_power(true, 29);
    wait_until(Duration::from_secs(30), "the daemon holds again", || env.status()["state"] == "holding");
    drop(daemon);
}

#[test]
fn upower_and_networkmanager_on_the_bus_hold_and_release_a_running_daemon() {
    let bus = SystemBus::start();
    let (env, _daemon) = daemon_on_the_bus(&bus);
    upload_under_way(&env, 4);
    let lost = std::time::Instant::now();
    bus.set_on_battery(true);
    wait_until(Duration::from_secs(10), "the upload stops", || job_state(&env).0 == "queued");
    assert!(lost.elapsed() < Duration::from_secs(2), "stopped {:?} after the charger went", lost.elapsed());
    assert_eq!(job_state(&env), ("queued".into(), "power".into(), 0), "waiting on power, no attempt charged");
    let status = env.status();
    assert_eq!(status["state"], "holding");
    assert_eq!(status["reason"], "on battery", "{status}");

    bus.set_metered(3);
    bus.set_on_battery(false);
    wait_until(Duration::from_secs(10), "the metered link is the reason now", || {
        env.status()["reason"] == "metered connection (NetworkManager)"
    });
    bus.set_metered(2);
    let good = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "the upload runs again", || job_state(&env).0 == "running");
    assert!(good.elapsed() >= Duration::from_millis(900), "resumed only after the hysteresis");
    wait_until(Duration::from_mins(1), "the upload completes", || job_state(&env).0 == "acknowledged");
    assert_eq!(job_state(&env).2, 0, "still no attempt charged");
    assert_eq!(tree(&env.dest).len(), 1);
}

/// Regression: `backup --now` (and `--allow-metered`) were ignored when a
/// daemon ran: the daemon kept holding and the backup exited 75.
#[test]
fn backup_now_through_a_daemon_lifts_the_battery_hold_for_that_backup() {
    let env = Env::new();
    env.write_config("settle = \"300ms\"\n");
    env.set_power(true, 41);
    let media = make_library(&env.source, 3, 1_000);
    let daemon = env.start_daemon();
    daemon.wait_until(Duration::from_secs(30), "the photos are found and held", || {
        env.status()["state"] == "holding" && env.count_jobs("queued") == media.len() as i64
    });
    let (code, summary) = backup_with(&env, &["--now"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(tree(&env.dest).len(), media.len());
    daemon.wait_until(Duration::from_secs(30), "the hold is back once the backup is done", || {
        env.status()["state"] == "holding"
    });
    crate::harness::write_photo(&env.source.join("later.jpg"), 1_000, 9);
    daemon.wait_until(Duration::from_secs(30), "the new photo is found", || env.count_jobs("queued") == 1);
    let (code, summary) = backup_with(&env, &[]);
    assert_eq!(code, 75, "without --now the battery holds again: {summary}");
}
