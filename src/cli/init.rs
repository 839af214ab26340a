//! `photosync init`: write a commented starter config.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Exit, UsageError};
use photosync::config::{self, Config};

/// Arguments of `photosync init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The photo folder to back up.
    #[arg(long, value_name = "DIR")]
    source: PathBuf,
    /// The folder to copy photos into (created if missing).
    #[arg(long, value_name = "DIR")]
    destination: PathBuf,
    /// Replace an existing config file.
    #[arg(long)]
    force: bool,
}

pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<Exit> {
    if config_path.exists() && !args.force {
        return Err(UsageError(format!("{} already exists; pass --force to replace it", config_path.display())).into());
    }
    let source = std::fs::canonicalize(&args.source)
        .map_err(|e| UsageError(format!("source folder {}: {e}", args.source.display())))?;
    if !source.is_dir() {
        return Err(UsageError(format!("source {} is not a folder", source.display())).into());
    }
    std::fs::create_dir_all(&args.destination)
        .with_context(|| format!("cannot create destination folder {}", args.destination.display()))?;
    let destination = std::fs::canonicalize(&args.destination)?;
    if destination.starts_with(&source) {
        eprintln!(
            "photosync: note: the destination is inside the source; photosync skips its own temporary files, \
             but copies would be scanned again as new photos. Prefer a folder outside {}.",
            source.display()
        );
    }
    let text = config::starter(&source, &destination);
    // Refuse to write something we could not read back.
    Config::parse(&text, config_path).context("internal error: the starter config does not validate")?;
    if let Some(dir) = config_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(config_path, text).with_context(|| format!("cannot write {}", config_path.display()))?;
    println!("Wrote {}", config_path.display());
    println!(
        "Run `photosync backup` to copy photos and videos from {} to {}.",
        source.display(),
        destination.display()
    );
    Ok(Exit::Done)
}
