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
    let destination = absolute(&args.destination)?;

    if destination.starts_with(&source) || source.starts_with(&destination) {
        return Err(UsageError(format!(
            "the destination {} and the source {} overlap; photosync would back up its own copies",
            destination.display(),
            source.display()
        ))
        .into());
    }
    let text = config::starter(&source, &destination);
    // Refuse to write something we could not read back.
    Config::parse(&text, config_path).context("internal error: the starter config does not validate")?;
    if let Some(dir) = config_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::create_dir_all(&destination)
        .with_context(|| format!("cannot create destination folder {}", destination.display()))?;
    std::fs::write(config_path, text).with_context(|| format!("cannot write {}", config_path.display()))?;
    println!("Wrote {}", config_path.display());
    println!(
        "Run `photosync backup` to copy photos and videos from {} to {}.",
        source.display(),
        destination.display()
    );
    Ok(Exit::Done)
}

/// `path` made absolute, with symlinks in its existing part resolved, without
/// requiring it to exist.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else { break };
        rest.push(name.to_owned());
        existing = parent;
    }
    let mut resolved = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}
