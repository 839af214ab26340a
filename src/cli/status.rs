//! `photosync status`: what the daemon is doing, and why not more.

use std::io::Write as _;
use std::time::Duration;

use indicatif::{BinaryBytes, HumanDuration};

use super::Exit;
use super::control::{require, unexpected};
use super::output::{printable, truncate_left};
use photosync::config::Config;
use photosync::ipc::protocol::{DaemonStatus, Request, Response};
use photosync::model::{StateName, Timestamp};

/// Arguments of `photosync status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status as one JSON object.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Refresh every second, like `top` (Ctrl-C to quit).
    #[arg(long)]
    watch: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    loop {
        let status = match require(config, &Request::Status)? {
            Response::Status(status) => status,
            other => return Err(unexpected(&other)),
        };
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &status)?;
            writeln!(out)?;
            return Ok(Exit::Done);
        }
        if args.watch {
            // Home the cursor and clear the screen.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        render(&mut out, &status)?;
        out.flush()?;
        if !args.watch {
            return Ok(Exit::Done);
        }
        drop(out);
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn since(t: Timestamp) -> String {
    format!("{} ago", HumanDuration(t.until(Timestamp::now())))
}

/// "Backed up: everything taken after 2019-03-14 14:22; 1,204 to go (newest first)."
fn backlog_line(b: &photosync::ipc::wire::Backlog) -> Option<String> {
    if b.to_go == 0 {
        return None;
    }
    let minute = |t: &str| t.get(..16).unwrap_or(t).replace('T', " ");
    let done = if b.order == "oldest" {
        b.complete_before.as_deref().map(|t| format!("everything taken before {}", minute(t)))
    } else {
        b.complete_after.as_deref().map(|t| format!("everything taken after {}", minute(t)))
    };
    let done = done.unwrap_or_else(|| "nothing yet".to_owned());
    Some(format!("backed up: {done}; {} photos and videos to go ({} first)", b.to_go, b.order))
}

/// "data budget: 1.20 GiB of 2.00 GiB used on 'Pixel hotspot' this month (800 MiB left), resets 2027-01-01".
fn budget_line(b: &photosync::ipc::wire::Budget) -> String {
    let note = if b.enforced { "" } else { "; not enforced for this backup (--allow-metered)" };
    format!(
        "data budget: {} of {} used on '{}' this {} ({} left), resets {}{note}",
        BinaryBytes(b.used),
        BinaryBytes(b.limit),
        printable(&b.network),
        b.period,
        BinaryBytes(b.remaining),
        b.resets,
    )
}

/// "photos: 1200 of 10000 requests of the daily quota used today (8800
/// left, …); 30000 files waiting: about 4 days at 1.02 requests a file",
/// and that its receipts are the service's word.
fn quota_line(q: &photosync::ipc::wire::Quota) -> String {
    let ends = HumanDuration(std::time::Duration::from_secs(q.resets_in_seconds));
    let head = format!(
        "{}: {} of {} requests of the daily quota used today ({} left, the count starts again in {ends})",
        printable(&q.destination),
        q.used,
        q.limit,
        q.remaining,
    );
    let rate = q.per_file.map_or_else(|| "at least 1 request a file".to_owned(), |r| format!("{r:.2} requests a file"));
    let line = match q.days {
        0 => head,
        1 => format!("{head}; {} files waiting: done today at {rate}", q.files_waiting),
        days => format!("{head}; {} files waiting: about {days} days at {rate}", q.files_waiting),
    };
    format!(
        "{line}\n  {}: a file counts as backed up once the service acknowledges it (it gives back no hash to \
         compare); `photosync verify` checks each is still there",
        printable(&q.destination)
    )
}

fn render(out: &mut impl std::io::Write, s: &DaemonStatus) -> std::io::Result<()> {
    let up = HumanDuration(s.started_at.until(Timestamp::now()));
    writeln!(out, "photosync daemon {} (pid {}), up {up}: {}", s.version, s.pid, s.state)?;
    if let Some(reason) = &s.reason {
        writeln!(out, "  {}", printable(reason))?;
    }
    let watching = if s.watching { "watching sources live" } else { "NOT watching live (periodic scans only)" };
    let scan = match (s.scanning, s.last_scan) {
        (true, _) => "scanning now".to_owned(),
        (false, Some(t)) => format!("last full scan {}", since(t)),
        (false, None) => "no full scan yet".to_owned(),
    };
    writeln!(out, "  {watching}; {scan}")?;
    if let Some(until) = s.keeping_awake_until {
        writeln!(
            out,
            "  keeping the system from idle sleep while uploading on mains, until {} at the latest",
            until.to_rfc3339()
        )?;
    }
    let left_out = s.skipped.map(|skipped| skipped.in_words()).unwrap_or_default();
    if !left_out.is_empty() {
        writeln!(out, "  not backed up at the last scan: {} (`photosync why PATH` says why)", left_out.join(", "))?;
    }
    let sched = &s.scheduler;
    let count = |state: StateName| sched.counts.get(state.as_str()).copied().unwrap_or(0);
    writeln!(
        out,
        "queue: {} queued, {} running, {} waiting to retry, {} failed, {} done",
        count(StateName::Queued),
        count(StateName::Running),
        count(StateName::RetryWait),
        count(StateName::Failed),
        count(StateName::Acknowledged),
    )?;
    if let Some(line) = backlog_line(&sched.backlog) {
        writeln!(out, "{line}")?;
    }
    if let Some(b) = &sched.budget {
        writeln!(out, "{}", budget_line(b))?;
    }
    for q in &sched.quotas {
        writeln!(out, "{}", quota_line(q))?;
    }
    if let Some(next) = sched.next_retry {
        writeln!(out, "next retry: in {}", HumanDuration(Timestamp::now().until(next)))?;
    }
    if !sched.uploads.is_empty() {
        writeln!(out, "uploading:")?;
        // A group's members go on its key's line while both are uploading.
        let uploading = |path: &str, destination: &str| {
            sched.uploads.iter().any(|k| k.path == path && k.destination == destination)
        };
        for u in &sched.uploads {
            if u.group.as_deref().is_some_and(|key| uploading(key, &u.destination)) {
                continue;
            }
            let members = sched
                .uploads
                .iter()
                .filter(|m| m.group.as_deref() == Some(u.path.as_str()) && m.destination == u.destination)
                .count();
            let path = if members == 0 {
                printable(&u.path).into_owned()
            } else {
                format!("{} +{members}", printable(&u.path))
            };
            let eta =
                u.eta_seconds.map(|s| format!("eta {}", HumanDuration(Duration::from_secs_f64(s)))).unwrap_or_default();
            writeln!(
                out,
                "  {:<44} → {:<10} {:>10} / {:<10} {:>10}/s  {eta}",
                truncate_left(&path, 44),
                printable(&u.destination),
                BinaryBytes(u.bytes_done).to_string(),
                BinaryBytes(u.bytes_total).to_string(),
                BinaryBytes(u.rate as u64).to_string(),
            )?;
        }
    }
    for hold in &sched.holds {
        writeln!(
            out,
            "holding {} job(s) for {}: {}",
            hold.jobs,
            printable(&hold.destination),
            printable(&hold.reason)
        )?;
    }
    if !sched.recent_errors.is_empty() {
        writeln!(out, "recent errors:")?;
        for e in sched.recent_errors.iter().take(5) {
            let path = truncate_left(&printable(&e.path), 40);
            writeln!(out, "  {} job {} {path}: {}", since(e.at), e.job, printable(&e.error))?;
        }
    }
    Ok(())
}
