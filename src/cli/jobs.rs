//! `photosync jobs`: list jobs from the catalog.

use std::io::Write as _;

use super::control::{ask, unexpected};
use super::output::{describe_job, printable, truncate_left};
use super::{Exit, UsageError};
use photosync::catalog::{Catalog, JobFilter};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};
use photosync::model::StateName;

/// Arguments of `photosync jobs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only jobs in this state: queued, running, `retry_wait`, succeeded, failed,
    /// acknowledged, cancelled.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    let state = match &args.state {
        None => None,
        Some(text) => Some(StateName::parse(text).ok_or_else(|| {
            let known: Vec<_> = StateName::ALL.iter().map(|s| s.as_str()).collect();
            UsageError(format!("unknown state `{text}`; use one of: {}", known.join(", ")))
        })?),
    };
    let jobs = match ask(config, &Request::Jobs { state })? {
        Some(Response::Jobs { jobs }) => jobs,
        Some(other) => return Err(unexpected(&other)),
        // No daemon: read the catalog directly.
        None => match Catalog::open_read_only(&config.catalog_path())? {
            Some(catalog) => catalog
                .list(JobFilter { state, active_only: false })?
                .iter()
                .map(photosync::daemon::wire::job)
                .collect(),
            None => Vec::new(),
        },
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &jobs)?;
        writeln!(out)?;
        return Ok(Exit::Done);
    }
    if jobs.is_empty() {
        writeln!(out, "No jobs{}.", state.map(|s| format!(" in state {s}")).unwrap_or_default())?;
        return Ok(Exit::Done);
    }
    writeln!(out, "{:>6}  {:<12}  {:>5}  {:<12}  {:<48}  DETAIL", "ID", "STATE", "TRIES", "DESTINATION", "PATH")?;
    for job in &jobs {
        writeln!(
            out,
            "{:>6}  {:<12}  {:>5}  {:<12}  {:<48}  {}",
            job.id.0,
            job.state.as_str(),
            job.attempts,
            printable(&job.destination),
            truncate_left(&printable(&job.path), 48),
            printable(&describe_job(job)),
        )?;
    }
    Ok(Exit::Done)
}
