//! `photosync why PATH…`: whether files are backed up, waiting, or left
//! out, and why; asked of the daemon when one runs, else of the catalog.

use std::io::Write as _;
use std::path::PathBuf;

use super::Exit;
use super::control::{ask, unexpected};
use super::output::printable;
use photosync::catalog::Catalog;
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};

/// Arguments of `photosync why`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to ask about.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Print a JSON array, one object per path, instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    // The daemon runs elsewhere: it gets absolute paths.
    let paths: Vec<PathBuf> = args.paths.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
    let answers = match ask(config, &Request::Why { paths: paths.clone() })? {
        Some(Response::Why { answers }) => answers,
        Some(other) => return Err(unexpected(&other)),
        None => {
            let catalog = Catalog::open_read_only(&config.catalog_path())?;
            paths
                .iter()
                .map(|path| photosync::why::answer(&config.sources, catalog.as_ref(), path))
                .map(|answer| answer.map(|a| photosync::daemon::wire::why(&a)))
                .collect::<Result<_, _>>()?
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &answers)?;
        writeln!(out)?;
        return Ok(Exit::Done);
    }
    for a in &answers {
        let verdict = a.verdict.replace('_', " ");
        writeln!(out, "{}: {verdict} — {}", printable(&a.path), printable(&a.explanation))?;
        if let Some(t) = &a.taken {
            let offset = t.offset.as_deref().map(|o| format!(" {o}")).unwrap_or_default();
            let camera = t.camera.as_deref().map(|c| format!(", {}", printable(c))).unwrap_or_default();
            writeln!(out, "  {} taken {}{offset} (from {}){camera}", t.kind, t.local.replace('T', " "), t.source)?;
        }
        if !a.group.is_empty() {
            let group: Vec<String> = a.group.iter().map(|p| printable(p).into_owned()).collect();
            writeln!(out, "  travels with {}", group.join(", "))?;
        }
        for u in &a.destinations {
            let key = u.receipt_key.as_deref().map(|k| format!(" as {}", printable(k))).unwrap_or_default();
            let error = u.error.as_deref().map(|e| format!(" ({})", printable(e))).unwrap_or_default();
            let since = u.updated_at.to_rfc3339();
            writeln!(out, "  [{}] {}{key} since {since}{error}", printable(&u.destination), u.state)?;
        }
    }
    Ok(Exit::Done)
}
