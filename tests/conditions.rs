//! The conditions policy with a real process: a fake sysfs power-supply
//! tree stands in for the laptop's battery.

use std::fs;
use std::time::Duration;

use crate::harness::{Env, make_library, tree, wait_until};

fn with_policy(env: &Env, policy: &str) {
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

/// A private D-Bus bus standing in for the system bus, with python-dbusmock
/// serving `UPower`, `NetworkManager` and logind on it (logind's template
/// hands out real inhibitor fds and lists them until they are closed).
struct SystemBus {
    address: String,
    children: Vec<std::process::Child>,
}

const PYTHON: &str = "/usr/bin/python3";

impl SystemBus {
    /// Starts the bus and the mocks; fails, saying what is missing, where
    /// dbus-daemon or python3-dbusmock is not installed.
    fn start() -> SystemBus {
        let has_mock = std::process::Command::new(PYTHON)
            .args(["-c", "import dbusmock"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            has_mock,
            "this test needs python3-dbusmock (Debian: apt-get install python3-dbusmock; .ci/run installs it)"
        );
        assert!(
            std::process::Command::new("dbus-daemon").arg("--version").output().is_ok(),
            "this test needs dbus-daemon (Debian: apt-get install dbus; .ci/run installs it)"
        );
        let mut daemon = std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("dbus-daemon");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(daemon.stdout.take().expect("stdout")), &mut line)
            .expect("bus address");
        let mut bus = SystemBus { address: line.trim().to_owned(), children: vec![daemon] };
        for (template, parameters) in [("upower", r#"{"OnBattery": true}"#), ("networkmanager", "{}"), ("logind", "{}")]
        {
            let mock = std::process::Command::new(PYTHON)
                .args(["-m", "dbusmock", "--system", "--template", template, "-p", parameters])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("dbusmock");
            bus.children.push(mock);
        }
        wait_until(Duration::from_secs(20), "the mocks answer", || {
            bus.call("nm.GetAll(NM, dbus_interface=PROPS)\nlogind.ListInhibitors(dbus_interface=LOGIN)")
        });
        bus
    }

    /// Runs a Python statement with `bus`, `upower`, `nm` and a few names bound.
    fn call(&self, statement: &str) -> bool {
        let program = format!(
            "import dbus\nbus = dbus.bus.BusConnection({:?})\nMOCK = 'org.freedesktop.DBus.Mock'\n\
             PROPS = 'org.freedesktop.DBus.Properties'\nNM = 'org.freedesktop.NetworkManager'\n\
             upower = bus.get_object('org.freedesktop.UPower', '/org/freedesktop/UPower')\n\
             nm = bus.get_object(NM, '/org/freedesktop/NetworkManager')\n\
             LOGIN = 'org.freedesktop.login1.Manager'\n\
             logind = bus.get_object('org.freedesktop.login1', '/org/freedesktop/login1')\n{statement}\n",
            self.address
        );
        std::process::Command::new(PYTHON).args(["-c", &program]).output().is_ok_and(|o| o.status.success())
    }

    /// The sleep inhibitors logind holds, as `what/who/mode`.
    fn inhibitors(&self) -> Vec<String> {
        let program = format!(
            "import dbus\nbus = dbus.bus.BusConnection({:?})\n\
             logind = bus.get_object('org.freedesktop.login1', '/org/freedesktop/login1')\n\
             for i in logind.ListInhibitors(dbus_interface='org.freedesktop.login1.Manager'):\n    \
             print(f'{{i[0]}}/{{i[1]}}/{{i[3]}}')\n",
            self.address
        );
        let out = std::process::Command::new(PYTHON).args(["-c", &program]).output().expect("python");
        assert!(out.status.success(), "ListInhibitors: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// Has logind announce a sleep (`true`) or a wake (`false`).
    fn prepare_for_sleep(&self, starting: bool) {
        let value = if starting { "True" } else { "False" };
        let done = self.call(&format!(
            "logind.EmitSignal(LOGIN, 'PrepareForSleep', 'b', [dbus.Boolean({value})], dbus_interface=MOCK)"
        ));
        assert!(done, "emit PrepareForSleep");
    }

    fn set_on_battery(&self, on_battery: bool) {
        let value = if on_battery { "True" } else { "False" };
        let done = self.call(&format!(
            "upower.UpdateProperties('org.freedesktop.UPower', {{'OnBattery': {value}}}, dbus_interface=MOCK)"
        ));
        assert!(done, "set OnBattery");
    }

    fn set_metered(&self, metered: u32) {
        let done = self.call(&format!(
            "try:\n    nm.UpdateProperties(NM, {{'Metered': dbus.UInt32({metered})}}, dbus_interface=MOCK)\n\
             except dbus.exceptions.DBusException:\n    nm.AddProperty(NM, 'Metered', dbus.UInt32({metered}), dbus_interface=MOCK)"
        ));
        assert!(done, "set Metered");
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A daemon on `bus` (mains power), its uploads slowed to 2 MiB/s so one can
/// be caught mid-way. The poll interval is long: only the bus's signals can
/// make it react in time.
fn daemon_on_the_bus(bus: &SystemBus) -> (Env, crate::harness::TestDaemon) {
    let env = Env::new();
    env.write_config("settle = \"100ms\"");
    with_policy(&env, "poll_interval = \"1h\"\nhysteresis = \"1s\"\nbandwidth = \"2MiB\"");
    env.use_system_bus(&bus.address);
    bus.set_on_battery(false);
    let daemon = env.start_daemon();
    (env, daemon)
}

/// Drops a 12 MiB video into the source and waits until its upload is under way.
fn upload_under_way(env: &Env, seed: u64) {
    crate::harness::write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, seed);
    wait_until(Duration::from_secs(30), "the upload is under way", || {
        env.status()["scheduler"]["uploads"][0]["bytes_done"].as_u64().is_some_and(|b| b > 0)
    });
}

fn job_state(env: &Env) -> (String, String, i64) {
    env.catalog()
        .query_row("SELECT state, COALESCE(waiting_on, ''), attempts FROM jobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("job")
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
    wait_until(Duration::from_secs(10), "the inhibitor is released", || bus.inhibitors().is_empty());
    assert!(announced.elapsed() < Duration::from_millis(2500), "released after {:?}", announced.elapsed());
    wait_until(Duration::from_secs(10), "the upload is queued again", || job_state(&env).0 == "queued");
    assert_eq!(job_state(&env), ("queued".into(), "sleep".into(), 0), "no attempt charged");

    let woke = std::time::Instant::now();
    bus.prepare_for_sleep(false);
    wait_until(Duration::from_secs(30), "the upload runs again", || job_state(&env).0 == "running");
    assert!(woke.elapsed() >= Duration::from_millis(900), "resumed only after the hysteresis");
    wait_until(Duration::from_mins(1), "the upload completes", || job_state(&env).0 == "acknowledged");
    assert_eq!(job_state(&env).2, 0, "still no attempt charged");
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
    }
    bus.set_metered(2);
    wait_until(Duration::from_mins(1), "the upload completes once unmetered", || job_state(&env).0 == "acknowledged");
    assert_eq!(job_state(&env).2, 0, "no attempt charged");
}
