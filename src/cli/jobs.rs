//! `photosync jobs`: list jobs from the catalog.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;

use super::control::{ask, unexpected};
use super::output::{describe_job, printable, truncate_left};
use super::{Exit, UsageError};
use photosync::catalog::{Catalog, JobFilter};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};
use photosync::ipc::wire::Job;
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
    // A group's members are shown on its key's line (when it is listed).
    let listed: HashSet<(&str, &str)> = jobs.iter().map(|j| (j.destination.as_str(), j.path.as_str())).collect();
    let mut members: HashMap<(&str, &str), Vec<&Job>> = HashMap::new();
    for job in &jobs {
        // A cancelled job is an older version's: it says nothing of the group now.
        let current = job.state != StateName::Cancelled;
        if let Some(key) =
            job.group.as_deref().filter(|key| current && listed.contains(&(job.destination.as_str(), *key)))
        {
            members.entry((job.destination.as_str(), key)).or_default().push(job);
        }
    }
    writeln!(out, "{:>6}  {:<12}  {:>5}  {:<12}  {:<48}  DETAIL", "ID", "STATE", "TRIES", "DESTINATION", "PATH")?;
    for job in &jobs {
        let folded = job.state != StateName::Cancelled
            && job.group.as_deref().is_some_and(|key| listed.contains(&(job.destination.as_str(), key)));
        if folded {
            continue;
        }
        let with = members.get(&(job.destination.as_str(), job.path.as_str())).map(Vec::as_slice).unwrap_or_default();
        // The group is as far as its least advanced file.
        let state = with.iter().map(|m| m.state).find(|s| *s != StateName::Acknowledged).unwrap_or(job.state);
        let state = if job.state == StateName::Acknowledged { state } else { job.state };
        let path = if with.is_empty() {
            printable(&job.path).into_owned()
        } else {
            format!("{} +{}", printable(&job.path), with.len())
        };
        let mut detail = describe_job(job);
        if !with.is_empty() {
            let names: Vec<String> =
                with.iter().map(|m| format!("{} (job {}, {})", file_name(&m.path), m.id.0, m.state)).collect();
            detail = format!("{detail}{}with {}", if detail.is_empty() { "" } else { "; " }, names.join(", "));
        }
        writeln!(
            out,
            "{:>6}  {:<12}  {:>5}  {:<12}  {:<48}  {}",
            job.id.0,
            state.as_str(),
            job.attempts,
            printable(&job.destination),
            truncate_left(&path, 48),
            printable(&detail),
        )?;
    }
    Ok(Exit::Done)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
