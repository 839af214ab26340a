//! `photosync retry`: queue failed or retry-waiting jobs again, now.

use super::control::{ask, unexpected};
use super::{Exit, UsageError};
use photosync::catalog::{Catalog, RunLock};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};
use photosync::model::{JobId, Timestamp};

/// Arguments of `photosync retry`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Job ids to retry (see `photosync jobs`).
    #[arg(value_name = "JOB")]
    jobs: Vec<i64>,
    /// Retry every failed and retry-waiting job.
    #[arg(long, conflicts_with = "jobs")]
    failed: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    if args.jobs.is_empty() && !args.failed {
        return Err(UsageError("name job ids to retry, or pass --failed for all of them".into()).into());
    }
    let ids: Vec<JobId> = args.jobs.iter().copied().map(JobId).collect();
    let (queued, refused) = match ask(config, &Request::Retry { jobs: ids.clone() })? {
        Some(Response::Retried { queued, refused }) => (queued.len(), refused),
        Some(other) => return Err(unexpected(&other)),
        // No daemon: requeue in the catalog directly.
        None => {
            let _lock = RunLock::acquire(&config.state_dir)?;
            let mut catalog = Catalog::open(&config.catalog_path())?;
            let results = catalog.requeue(&ids, Timestamp::now())?;
            let queued = results.iter().filter(|r| r.is_ok()).count();
            (queued, results.into_iter().filter_map(Result::err).collect())
        }
    };
    for reason in &refused {
        eprintln!("photosync: {}", super::output::printable(reason));
    }
    println!("Queued {queued} job(s) again.");
    Ok(if refused.is_empty() { Exit::Done } else { Exit::Failed })
}
