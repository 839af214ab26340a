//! `photosync backup`: one run for cron and scripts, with a summary and an
//! exit code.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::BinaryBytes;
use serde::Serialize;

use super::Exit;
use super::control::{ask, unexpected};
use super::output::{BackupProgress, NoProgress, printable};
use photosync::backup::{self, BackupObserver, BackupOutcome};
use photosync::catalog::{Catalog, RunLock};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};
use photosync::ipc::wire;
use photosync::model::{JobId, StateName, Timestamp};
use photosync::policy::Overrides;

/// Arguments of `photosync backup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON summary object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Upload now even on battery or outside the allowed windows (not on a
    /// metered link: add --allow-metered for that).
    #[arg(long, visible_alias = "ignore-conditions")]
    now: bool,
    /// Upload even on a metered connection.
    #[arg(long)]
    allow_metered: bool,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct Summary {
    /// Photos and videos found in the sources.
    discovered: u64,
    /// Of those, new files and new versions of edited files.
    new: u64,
    /// Files written to a destination in this run.
    uploaded: u64,
    /// Files a destination already had (same content).
    already_present: u64,
    /// Jobs failed permanently plus files that could not be read.
    failed: u64,
    /// Jobs left for a later run (waiting to retry, or not attempted).
    deferred: u64,
    /// Jobs cancelled because the file was deleted or replaced.
    cancelled: u64,
    /// Bytes written in this run.
    bytes_uploaded: u64,
    /// Files read in this run (new or changed ones, photos or not: an
    /// unchanged file is never read again).
    files_read: u64,
    /// Wall-clock seconds.
    seconds: f64,
    /// What failed, and why.
    failures: Vec<Failure>,
    /// Why work was deferred.
    deferrals: Vec<Deferral>,
    /// Files in the sources that are not backed up, by reason.
    skipped: wire::Skipped,
    /// The exit code.
    exit_code: i32,
}

#[derive(Debug, Serialize)]
struct Failure {
    path: String,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
}

#[derive(Debug, Serialize)]
struct Deferral {
    reason: String,
    jobs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    let started = Instant::now();
    // With a daemon running, it owns the catalog: ask it to do the backup.
    let request = Request::Backup { now: args.now, allow_metered: args.allow_metered };
    let outcome = match ask(config, &request)? {
        Some(Response::Backup(outcome)) => *outcome,
        Some(other) => return Err(unexpected(&other)),
        None => photosync::daemon::wire::backup(&run_here(config, args)?),
    };
    let summary = summarize(&outcome, started.elapsed().as_secs_f64());
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        print_human(&mut out, &summary)?;
    }
    Ok(exit_code(&outcome, &summary))
}

/// Runs the backup in this process.
fn run_here(config: &Config, args: &Args) -> anyhow::Result<BackupOutcome> {
    let _lock = RunLock::acquire(&config.state_dir)?;
    let mut catalog = Catalog::open(&config.catalog_path())?;
    let progress = (!args.json && std::io::stdout().is_terminal()).then(|| Arc::new(BackupProgress::new()));
    let observer: Arc<dyn BackupObserver> = match &progress {
        Some(bar) => bar.clone(),
        None => Arc::new(NoProgress),
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let overrides = Overrides { ignore_power_and_window: args.now, allow_metered: args.allow_metered };
    let outcome = runtime.block_on(backup::run(config, &mut catalog, overrides, observer, shutdown_signal()));
    if let Some(bar) = &progress {
        bar.finish();
    }
    Ok(outcome?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without handlers the default action (exit) applies, which is safe.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

fn exit_code(outcome: &wire::Backup, summary: &Summary) -> Exit {
    if outcome.drain.interrupted {
        Exit::Interrupted
    } else if summary.failed > 0 {
        Exit::Failed
    } else if summary.deferred > 0 || !summary.deferrals.is_empty() {
        Exit::Deferred
    } else {
        Exit::Done
    }
}

fn summarize(outcome: &wire::Backup, seconds: f64) -> Summary {
    let mut failures: Vec<Failure> = outcome
        .scans
        .iter()
        .flat_map(|scan| &scan.errors)
        .map(|e| Failure { path: e.path.clone(), reason: e.reason.clone(), job: None, destination: None })
        .collect();
    failures.extend(outcome.failed.iter().map(|job| Failure {
        path: job.path.clone(),
        reason: job.error.clone().unwrap_or_default(),
        job: Some(job.id),
        destination: Some(job.destination.clone()),
    }));

    let mut deferrals: Vec<Deferral> = outcome
        .drain
        .holds
        .iter()
        .map(|wire::Hold { destination, reason, jobs }| Deferral {
            reason: reason.clone(),
            jobs: *jobs,
            destination: Some(destination.clone()),
            next_attempt_at: None,
        })
        .collect();
    let now = Timestamp::now();
    for job in &outcome.retry_wait {
        let reason = job.error.clone().unwrap_or_default();
        let at = job.next_attempt_at.unwrap_or(now);
        match deferrals.iter_mut().find(|d| d.reason == reason && d.destination.as_deref() == Some(&job.destination)) {
            Some(d) => {
                d.jobs += 1;
                let at = at.to_rfc3339();
                if d.next_attempt_at.as_ref().is_none_or(|t| at < *t) {
                    d.next_attempt_at = Some(at);
                }
            }
            None => deferrals.push(Deferral {
                reason,
                jobs: 1,
                destination: Some(job.destination.clone()),
                next_attempt_at: Some(at.to_rfc3339()),
            }),
        }
    }

    // A source that was not there (an unmounted disk) was not scanned: what
    // it holds now is unknown, so the run is not complete.
    for reason in outcome.scans.iter().filter_map(|s| s.unavailable.as_ref()) {
        if !deferrals.iter().any(|d| d.reason == *reason) {
            deferrals.push(Deferral { reason: reason.clone(), jobs: 0, destination: None, next_attempt_at: None });
        }
    }

    let settling: u64 = outcome.scans.iter().map(|s| s.settling).sum();
    if settling > 0 {
        deferrals.push(Deferral {
            reason: "files are still changing; they are uploaded once unchanged for `settle`".into(),
            jobs: settling,
            destination: None,
            next_attempt_at: None,
        });
    }
    let deferred = outcome.count(StateName::Queued) + outcome.count(StateName::RetryWait) + settling;
    let mut summary = Summary {
        discovered: outcome.scans.iter().map(|s| s.media_files).sum(),
        new: outcome.scans.iter().map(|s| s.new_versions).sum(),
        uploaded: outcome.drain.uploaded,
        already_present: outcome.drain.already_present,
        failed: failures.len() as u64,
        deferred,
        cancelled: outcome.drain.cancelled,
        bytes_uploaded: outcome.drain.bytes_uploaded,
        files_read: outcome.scans.iter().map(|s| s.read + s.not_media_read).sum(),
        seconds: (seconds * 1000.0).round() / 1000.0,
        failures,
        deferrals,
        skipped: outcome.scans.iter().fold(wire::Skipped::default(), |mut all, scan| {
            all.add(&scan.skipped);
            all
        }),
        exit_code: 0,
    };
    summary.exit_code = exit_code(outcome, &summary) as i32;
    summary
}

fn print_human(out: &mut impl std::io::Write, s: &Summary) -> std::io::Result<()> {
    writeln!(out, "Found {} photos and videos ({} new).", s.discovered, s.new)?;
    writeln!(
        out,
        "Uploaded {} file{} ({}) in {:.1} s; {} already present.",
        s.uploaded,
        if s.uploaded == 1 { "" } else { "s" },
        BinaryBytes(s.bytes_uploaded),
        s.seconds,
        s.already_present,
    )?;
    if s.cancelled > 0 {
        writeln!(out, "Cancelled {} job(s) whose file was deleted or replaced.", s.cancelled)?;
    }
    let left_out = s.skipped.in_words();
    if !left_out.is_empty() {
        writeln!(out, "Not backed up: {}.", left_out.join(", "))?;
    }
    if !s.failures.is_empty() {
        writeln!(out, "{} failed:", s.failures.len())?;
        for f in &s.failures {
            let job = f.job.map(|j| format!(" (job {j})")).unwrap_or_default();
            writeln!(out, "  {}{job}: {}", printable(&f.path), printable(&f.reason))?;
        }
        if s.failures.iter().any(|f| f.job.is_some()) {
            writeln!(out, "Fix the cause, then `photosync retry --failed`.")?;
        }
    }
    if s.deferred > 0 || !s.deferrals.is_empty() {
        writeln!(out, "{} deferred to a later run:", s.deferred)?;
        for d in &s.deferrals {
            let dest = d.destination.as_deref().map(|n| format!("[{}] ", printable(n))).unwrap_or_default();
            let at = d.next_attempt_at.as_deref().map(|t| format!(", next try {t}")).unwrap_or_default();
            let jobs = if d.jobs > 0 { format!("{} job(s){at}: ", d.jobs) } else { String::new() };
            writeln!(out, "  {dest}{jobs}{}", printable(&d.reason))?;
        }
    }
    if s.exit_code == Exit::Interrupted as i32 {
        writeln!(out, "Interrupted; the next run resumes where this one stopped.")?;
    }
    Ok(())
}
