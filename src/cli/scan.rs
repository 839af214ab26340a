//! `photosync scan`: have the daemon reconcile every source now.

use std::io::Write as _;

use super::Exit;
use super::control::{require, unexpected};
use super::output::printable;
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};

/// Arguments of `photosync scan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the scan reports as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    let scans = match require(config, &Request::Scan)? {
        Response::Scanned { scans } => scans,
        other => return Err(unexpected(&other)),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &scans)?;
        writeln!(out)?;
    } else {
        let media: u64 = scans.iter().map(|s| s.media_files).sum();
        let new: u64 = scans.iter().map(|s| s.new_versions).sum();
        writeln!(out, "Scanned: {media} photos and videos, {new} new.")?;
        for error in scans.iter().flat_map(|s| &s.errors) {
            writeln!(out, "  {}: {}", printable(&error.path), printable(&error.reason))?;
        }
        for reason in scans.iter().filter_map(|s| s.unavailable.as_deref()) {
            writeln!(out, "  {}", printable(reason))?;
        }
    }
    let failed = scans.iter().any(|s| !s.errors.is_empty());
    Ok(if failed { Exit::Failed } else { Exit::Done })
}
