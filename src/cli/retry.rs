//! `photosync retry`: queue failed or retry-waiting jobs again, now.

use super::{Exit, UsageError};
use photosync::catalog::{Catalog, RunLock};
use photosync::config::Config;
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
    let _lock = RunLock::acquire(&config.state_dir)?;
    let mut catalog = Catalog::open(&config.catalog_path())?;
    let ids: Vec<JobId> = args.jobs.iter().copied().map(JobId).collect();
    let results = catalog.requeue(&ids, Timestamp::now())?;
    let mut refused = false;
    let mut queued = 0;
    for result in results {
        match result {
            Ok(_) => queued += 1,
            Err(reason) => {
                refused = true;
                eprintln!("photosync: {reason}");
            }
        }
    }
    println!("Queued {queued} job(s) again; run `photosync backup` to upload them.");
    Ok(if refused { Exit::Failed } else { Exit::Done })
}
