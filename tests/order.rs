//! The order uploads go in: a photo that appears while the daemon runs goes
//! first, then the backlog, the most recently taken first.

use std::fs;
use std::time::{Duration, SystemTime};

use crate::harness::{Env, stdout, wait_until, write_photo, write_video};

const BACKLOG: usize = 5_000;

/// `IMG_YYYYMMDD_HHMMSS.jpg` for a capture `hours` after 2010-01-01.
fn dated_name(hours: i64) -> String {
    let t = jiff::civil::date(2010, 1, 1).at(0, 0, 0, 0) + jiff::Span::new().hours(hours);
    format!("IMG_{}.jpg", t.strftime("%Y%m%d_%H%M%S"))
}

#[test]
fn a_live_photo_goes_before_the_backlog_and_the_backlog_goes_newest_first() {
    let env = Env::new();
    // One upload task at a time (a batch of small files), so batches are
    // acknowledged in the order they start, and a batch's jobs in its order.
    env.write_config("settle = \"200ms\"\nmax_concurrent = 1");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(
        &env.config,
        config.replacen("[policy]\n", "[policy]\npoll_interval = \"100ms\"\nhysteresis = \"300ms\"\n", 1),
    )
    .expect("config");
    env.set_power(true, 50);
    // Capture times in an order unrelated to the names' or the folders'.
    // Written an hour ago: a backlog, not files still being copied in.
    let an_hour_ago = SystemTime::now() - Duration::from_hours(1);
    for i in 0..BACKLOG {
        let hours = (i as i64 * 7_919) % BACKLOG as i64 * 3;
        let path = env.source.join(format!("{:02}", i % 40)).join(dated_name(hours));
        write_photo(&path, 600, i as u64);
        fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(an_hour_ago)).expect("mtime");
    }
    let daemon = env.start_daemon();
    wait_until(Duration::from_mins(2), "the backlog is scanned and held (on battery)", || {
        env.count_jobs("queued") == BACKLOG as i64 && env.status()["state"] == "holding"
    });
    let backlog = env.status()["scheduler"]["backlog"].clone();
    assert_eq!(backlog["to_go"], BACKLOG, "{backlog}");
    assert_eq!(backlog["complete_after"], "2011-09-17T21:00:00", "the newest photo still to go");
    assert_eq!(backlog["complete_before"], "2010-01-01T00:00:00", "the oldest photo still to go");
    let text = stdout(&env.run(["status"]));
    assert!(
        text.contains(
            "backed up: everything taken after 2011-09-17 21:00; 5000 photos and videos to go (newest first)"
        ),
        "{text}"
    );
    // Taken long before any photo of the backlog, but found live.
    write_photo(&env.source.join("new").join("IMG_20010101_120000.jpg"), 600, 99_999);
    wait_until(Duration::from_secs(30), "the new photo is found", || env.count_jobs("queued") == BACKLOG as i64 + 1);
    env.set_power(false, 51);
    wait_until(Duration::from_mins(4), "everything is uploaded", || {
        env.count_jobs("acknowledged") == BACKLOG as i64 + 1
    });
    assert_eq!(env.status()["scheduler"]["backlog"]["to_go"], 0);
    drop(daemon);

    let catalog = env.catalog();
    let acknowledged: Vec<(String, i64, i64)> = catalog
        .prepare(
            "SELECT CAST(a.rel_path AS TEXT), a.captured_at, j.updated_at FROM jobs j JOIN assets a ON a.id = j.asset_id
             ORDER BY j.updated_at, j.id",
        )
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    // Jobs acknowledged in the same millisecond come out by id, and the
    // photo found live has the newest job: it must be among the first.
    let first_at = acknowledged[0].2;
    let live = acknowledged.iter().position(|(path, _, _)| path == "new/IMG_20010101_120000.jpg").expect("live");
    assert_eq!(acknowledged[live].2, first_at, "the photo found live went first: {:?}", &acknowledged[..3]);
    let rest: Vec<_> = acknowledged.iter().enumerate().filter(|(i, _)| *i != live).map(|(_, job)| job).collect();
    // Jobs acknowledged in the same millisecond cannot be told apart; from
    // one millisecond to the next, capture times only go back.
    let mut groups: Vec<(i64, i64, i64)> = Vec::new(); // per millisecond: newest and oldest capture
    for (_, taken, at) in rest {
        match groups.last_mut() {
            Some((group_at, newest, oldest)) if group_at == at => {
                *newest = (*newest).max(*taken);
                *oldest = (*oldest).min(*taken);
            }
            _ => groups.push((*at, *taken, *taken)),
        }
    }
    for pair in groups.windows(2) {
        assert!(pair[1].1 <= pair[0].2, "a photo taken later was uploaded after one taken earlier: {pair:?}");
    }
    // 5,000 uploads in batches of at most 256, one batch after the other.
    assert!(groups.len() > 10, "acknowledgements are spread out enough to show an order: {}", groups.len());
}

/// A window about to close: a video that cannot finish before it does
/// waits (and says why), and the photos that can go first, although the
/// video is the newest.
#[test]
fn a_video_too_big_for_what_is_left_of_the_window_waits_for_the_next() {
    let env = Env::new();
    // Allowed from ten minutes ago until two minutes from now: at 200 KiB/s
    // at most about 24 MiB before it closes, about 140 MiB in a whole window.
    let now = jiff::Zoned::now();
    let minute = i32::from(now.hour()) * 60 + i32::from(now.minute());
    let clock = |m: i32| format!("{:02}:{:02}", m.rem_euclid(1440) / 60, m.rem_euclid(1440) % 60);
    let (start, end) = (clock(minute - 10), clock(minute + 2));
    let config = fs::read_to_string(&env.config).expect("config");
    let policy = format!("[policy]\nwindows = [\"{start}-{end}\"]\nbandwidth = \"200KiB\"\n");
    fs::write(&env.config, config.replacen("[policy]\n", &policy, 1)).expect("config");
    write_video(&env.source.join("VID_20240101_120000.mp4"), 60 << 20, 1);
    for i in 0..5 {
        write_photo(&env.source.join(format!("IMG_2010010{i}_120000.jpg")), 2_000, i + 2);
    }
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "work was left for later: {summary}");
    assert_eq!(summary["uploaded"], 5, "the photos went: {summary}");
    assert_eq!(summary["deferred"], 1, "{summary}");
    let reason = summary["deferrals"][0]["reason"].as_str().expect("a reason");
    assert_eq!(reason, format!("too big to finish before the upload window closes at {end}"), "{summary}");
    let attempts: i64 = env.catalog().query_row("SELECT SUM(attempts) FROM jobs", [], |r| r.get(0)).expect("sum");
    assert_eq!(attempts, 0, "the video was not started and cut off");
}
