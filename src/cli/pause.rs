//! `photosync pause [--for DURATION]`: stop uploading; in-flight uploads stop
//! cleanly and keep their progress.

use std::time::Duration;

use super::control::{require, unexpected};
use super::{Exit, UsageError};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};
use photosync::model::Timestamp;

/// Arguments of `photosync pause`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Resume by itself after this long, e.g. "30m" or "2h".
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    let until = match &args.duration {
        None => None,
        Some(text) => {
            let d: Duration = humantime::parse_duration(text)
                .map_err(|e| UsageError(format!("--for {text:?} is not a duration like \"30m\" ({e})")))?;
            Some(Timestamp::now().after(d))
        }
    };
    match require(config, &Request::Pause { until })? {
        Response::Done => {}
        other => return Err(unexpected(&other)),
    }
    match until {
        Some(t) => println!("Paused until {}.", t.to_rfc3339()),
        None => println!("Paused until `photosync resume`."),
    }
    Ok(Exit::Done)
}
