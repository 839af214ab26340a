//! The data budget on metered links (`metered_budget`), against
//! python-dbusmock's `NetworkManager` on a private bus: a metered primary
//! connection with its own `Uuid` and name.

use std::time::Duration;

use crate::harness::{Env, tree, wait_until, write_photo};
use crate::system_bus::{SystemBus, daemon_on_the_bus_with, job_state, upload_under_way};

/// The budget in these tests: six of the 1,000,000-byte photos fit, a
/// seventh does not.
const BUDGET: u64 = 6 * 1024 * 1024;
const PHOTO: usize = 1_000_000;

/// Twenty photos of [`PHOTO`] bytes.
fn twenty_photos(env: &Env) {
    for i in 0..20 {
        write_photo(&env.source.join(format!("IMG_{i:04}.JPG")), PHOTO, i);
    }
}

/// Bytes the catalog has counted for each network this period.
fn counted(env: &Env) -> Vec<(String, String, u64)> {
    let catalog = env.catalog();
    let mut query = catalog.prepare("SELECT network, name, bytes FROM metered_usage ORDER BY network").expect("query");
    query
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.cast_unsigned())))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

fn uploaded_bytes(env: &Env) -> u64 {
    tree(&env.dest).values().map(|c| c.len() as u64).sum()
}

/// A metered hotspot with a 6 MiB monthly budget and 20 MB of photos: what
/// fits goes, the rest waits with the reason; `status --json` shows the
/// count, what is left and the reset date; the count survives a kill -9;
/// a second metered connection has a budget of its own; nothing sent over
/// an unmetered link is counted.
#[test]
fn a_metered_budget_stops_uploads_when_spent_and_counts_per_network() {
    let bus = SystemBus::start();
    bus.set_metered(1);
    bus.set_primary_connection("7222c729-0001-4f00-8000-00000000aaaa", "Pixel hotspot");
    let policy = "metered = \"allow\"\nmetered_budget = \"6MiB/month\"\nmetered_budget_reset_day = 1";
    let (env, daemon) = daemon_on_the_bus_with(&bus, policy);
    twenty_photos(&env);
    daemon.wait_until(Duration::from_mins(1), "the budget is spent", || {
        env.count_jobs("acknowledged") == 6 && env.count_jobs("queued") == 14 && env.status()["state"] == "holding"
    });
    let status = env.status();
    let budget = &status["scheduler"]["budget"];
    assert_eq!(budget["network"], "Pixel hotspot", "{status}");
    assert_eq!(budget["used"], 6 * PHOTO as u64, "{status}");
    assert_eq!(budget["limit"], BUDGET);
    assert_eq!(budget["remaining"], BUDGET - 6 * PHOTO as u64);
    assert_eq!(budget["period"], "month");
    let today = jiff::Zoned::now().date();
    let next = today.first_of_month().last_of_month().tomorrow().expect("a next month");
    assert_eq!(budget["resets"], next.to_string());
    let reason = status["reason"].as_str().expect("a reason");
    assert!(reason.contains("waits for the data budget") && reason.contains("'Pixel hotspot'"), "{reason}");
    assert!(uploaded_bytes(&env) <= BUDGET, "no more than the budget was sent");

    // A kill -9 keeps the count: the restarted daemon sends nothing more.
    daemon.signal("KILL");
    drop(daemon);
    let daemon = env.start_daemon();
    daemon.wait_until(Duration::from_secs(30), "the restarted daemon holds", || {
        let status = env.status();
        status["state"] == "holding" && status["scheduler"]["budget"]["used"] == 6 * PHOTO as u64
    });
    assert_eq!(env.count_jobs("acknowledged"), 6);

    // Another metered connection has a budget of its own.
    bus.set_primary_connection("7222c729-0002-4f00-8000-00000000bbbb", "Café Wi-Fi");
    bus.set_metered(3);
    daemon.wait_until(Duration::from_mins(1), "six more go on the second network", || {
        env.count_jobs("acknowledged") == 12 && env.status()["scheduler"]["budget"]["network"] == "Café Wi-Fi"
    });

    // Unmetered, the rest goes and is not counted.
    bus.set_metered(2);
    daemon.wait_until(Duration::from_mins(1), "everything is uploaded once unmetered", || {
        env.count_jobs("acknowledged") == 20
    });
    assert!(env.status()["scheduler"]["budget"].is_null(), "no budget off a metered link");
    let counts = counted(&env);
    let names: Vec<&str> = counts.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names, ["Pixel hotspot", "Café Wi-Fi"]);
    for (network, _, bytes) in &counts {
        assert_eq!(*bytes, 6 * PHOTO as u64, "{network}: only what went over it");
    }
    assert_eq!(uploaded_bytes(&env), 20 * PHOTO as u64);
}

/// A one-shot `backup` on a metered link sends what fits and reports the
/// rest as waiting for the budget (exit 75); `--allow-metered` lifts the
/// limit for its run, and what it sends is counted too.
#[test]
fn backup_respects_the_budget_and_allow_metered_is_counted() {
    let bus = SystemBus::start();
    bus.set_metered(1);
    bus.set_on_battery(false);
    bus.set_primary_connection("7222c729-0003-4f00-8000-00000000cccc", "Phone");
    let env = Env::new();
    env.write_config("");
    crate::conditions::with_policy(&env, "metered = \"allow\"\nmetered_budget = \"6MiB/day\"");
    env.use_system_bus(&bus.address);
    twenty_photos(&env);

    let out = env.run(["backup", "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(out.status.code(), Some(75), "{summary}");
    assert_eq!(summary["uploaded"], 6, "{summary}");
    let deferral = &summary["deferrals"][0];
    assert_eq!(deferral["jobs"], 14, "{summary}");
    assert!(deferral["reason"].as_str().is_some_and(|r| r.contains("data budget")), "{summary}");

    let out = env.run(["backup", "--allow-metered", "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert_eq!(summary["uploaded"], 14, "{summary}");
    assert_eq!(counted(&env), [("nm:7222c729-0003-4f00-8000-00000000cccc".into(), "Phone".into(), 20 * PHOTO as u64)]);
}

/// Regression: an upload that started on an unmetered link went on to the
/// end when the link turned metered, past the budget. It must stop (back
/// in the queue, no attempt charged, its progress kept) and wait for the
/// budget.
#[test]
fn an_upload_started_unmetered_ran_on_past_the_budget_when_the_link_turned_metered() {
    let bus = SystemBus::start();
    bus.set_metered(2);
    bus.set_primary_connection("7222c729-0004-4f00-8000-00000000dddd", "Hotspot");
    let policy = "metered = \"allow\"\nmetered_budget = \"6MiB/month\"";
    let (env, daemon) = daemon_on_the_bus_with(&bus, policy);
    upload_under_way(&env, 11);
    bus.set_metered(1);
    daemon.wait_until(Duration::from_secs(20), "the upload stops and waits for the budget", || {
        let status = env.status();
        let (state, _, attempts) = job_state(&env);
        (state.as_str(), attempts) == ("queued", 0)
            && status["reason"].as_str().is_some_and(|r| r.contains("waits for the data budget"))
    });
    let stored = tree(&env.dest);
    assert!(!stored.keys().any(|path| path.ends_with("clip.mp4")), "nothing was stored: {:?}", stored.keys());
    bus.set_metered(2);
    daemon.wait_until(Duration::from_mins(1), "it completes once unmetered", || job_state(&env).0 == "acknowledged");
}

/// Regression: the bytes an upload sent were written down only when it
/// ended, so a kill -9 in the middle of a big video lost its count and
/// `status` showed none of it. They are written down every second.
#[test]
fn the_count_of_a_running_upload_was_written_only_when_it_ended() {
    let bus = SystemBus::start();
    bus.set_metered(1);
    bus.set_primary_connection("7222c729-0005-4f00-8000-00000000eeee", "Hotspot");
    let policy = "metered = \"allow\"\nmetered_budget = \"1GiB/day\"";
    let (env, daemon) = daemon_on_the_bus_with(&bus, policy);
    upload_under_way(&env, 12);
    daemon.wait_until(Duration::from_secs(10), "the count grows during the upload", || {
        let counted = counted(&env).first().map_or(0, |(_, _, bytes)| *bytes);
        counted > 0 && job_state(&env).0 == "running"
    });
    daemon.signal("KILL");
    drop(daemon);
    let before = counted(&env)[0].2;
    let _daemon = env.start_daemon();
    wait_until(Duration::from_mins(1), "the upload completes after the restart", || {
        job_state(&env).0 == "acknowledged"
    });
    assert!(counted(&env)[0].2 > before, "the restarted daemon adds to the count, never resets it");
}
