//! `photosync verify`: prove every acknowledged receipt against its
//! destination; through the daemon when one runs.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::control::{ask, unexpected};
use super::output::printable;
use super::{Exit, UsageError};
use photosync::catalog::{Catalog, RunLock};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};
use photosync::model::Timestamp;
use photosync::scheduler::open_targets;
use photosync::verify::{self, ProblemKind, VerifyObserver, VerifyOptions, VerifyReport};

/// Arguments of `photosync verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this destination (its `name` in the config).
    #[arg(long, value_name = "NAME")]
    destination: Option<String>,
    /// Check only this many objects, chosen at random (a quick spot check).
    #[arg(long, value_name = "N")]
    sample: Option<usize>,
    /// Read every object back and hash it, rather than trust the server's
    /// own checksums (folders are always read back).
    #[arg(long)]
    deep: bool,
    /// Queue what is missing or corrupt for upload again (nothing at the
    /// destination is overwritten: a changed copy stays, the good one goes
    /// beside it).
    #[arg(long)]
    repair: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    if args.sample == Some(0) {
        return Err(UsageError("--sample takes a number of objects above 0".into()).into());
    }
    let started = Instant::now();
    let options = VerifyOptions { destination: args.destination.clone(), sample: args.sample, deep: args.deep };
    let show = !args.json && std::io::stdout().is_terminal();
    let request = Request::Verify { options: options.clone(), repair: args.repair };
    let waiting = show.then(|| spinner("verifying through the daemon"));
    let answer = ask(config, &request);
    if let Some(bar) = waiting {
        bar.finish_and_clear();
    }
    let report = match answer? {
        Some(Response::Verified(report)) => *report,
        Some(other) => return Err(unexpected(&other)),
        None => run_here(config, &options, args.repair, show)?,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_human(&mut out, &report, args.repair, started.elapsed())?;
    }
    Ok(if report.found_damage() {
        Exit::Failed
    } else if report.problems.is_empty() {
        Exit::Done
    } else {
        Exit::Deferred
    })
}

/// Verifies in this process (no daemon runs).
fn run_here(config: &Config, options: &VerifyOptions, repair: bool, show: bool) -> anyhow::Result<VerifyReport> {
    let _lock = RunLock::acquire(&config.state_dir)?;
    let mut catalog = Catalog::open(&config.catalog_path())?;
    let targets = open_targets(&mut catalog, config)?;
    let chosen = verify::chosen(&targets, options).map_err(UsageError)?;
    let ids: Vec<_> = chosen.iter().map(|t| t.id).collect();
    let receipts = catalog.receipts(&ids)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let progress = Progress(show.then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} objects  eta {eta}");
        bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }));
    let mut report = runtime.block_on(verify::verify(receipts, &chosen, options, &progress));
    if let Some(bar) = &progress.0 {
        bar.finish_and_clear();
    }
    if repair && report.found_damage() {
        report.repaired = catalog.repair(&report.broken_jobs(), Timestamp::now())?;
    }
    Ok(report)
}

/// A progress bar (on a terminal) or nothing.
struct Progress(Option<ProgressBar>);

impl VerifyObserver for Progress {
    fn objects(&self, count: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(count);
        }
    }

    fn checked(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}

fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn print_human(
    out: &mut impl std::io::Write,
    report: &VerifyReport,
    repair: bool,
    took: Duration,
) -> std::io::Result<()> {
    writeln!(
        out,
        "Checked {} receipt(s), {} object(s), in {:.1} s: {} hold.",
        report.receipts,
        report.objects,
        took.as_secs_f64(),
        report.held
    )?;
    for problem in &report.problems {
        let what = match problem.kind {
            ProblemKind::Missing => "MISSING",
            ProblemKind::Corrupt => "CORRUPT",
            ProblemKind::Unchecked => "UNCHECKED",
        };
        writeln!(
            out,
            "  {what:<9} [{}] {}: {}",
            printable(&problem.destination),
            printable(&problem.key),
            printable(&problem.reason)
        )?;
        for (job, path) in problem.jobs.iter().zip(&problem.paths) {
            writeln!(out, "            from {} (job {job})", printable(path))?;
        }
    }
    if !report.repaired.is_empty() {
        writeln!(
            out,
            "Queued {} job(s) to be uploaded again; `photosync backup` (or the running daemon) does it.",
            report.repaired.len()
        )?;
    } else if report.found_damage() && !repair {
        writeln!(out, "Run `photosync verify --repair` to upload them again.")?;
    }
    Ok(())
}
