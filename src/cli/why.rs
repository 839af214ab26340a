//! `photosync why PATH…`: whether a file is backed up, waiting (and for
//! what), or not backed up (why, and what would change that).

use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Exit;
use super::output::printable;
use photosync::catalog::{Catalog, JobView};
use photosync::config::{Config, SourceConfig};
use photosync::discover::{SkipReason, classify, stat_of};
use photosync::media::{self, Inspection};
use photosync::model::StateName;

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

/// The answer for one path.
#[derive(Debug, Serialize)]
struct Answer {
    path: String,
    /// `backed_up`, `waiting` or `not_backed_up`.
    verdict: &'static str,
    /// Why, as a word for scripts (`acknowledged`, `queued`, `not_media`…).
    reason: &'static str,
    /// Why, and what would change it, for people.
    explanation: String,
    /// Its upload to each destination, once a scan has recorded it.
    destinations: Vec<Upload>,
}

#[derive(Debug, Serialize)]
struct Upload {
    destination: String,
    state: StateName,
    /// Where the destination keeps it, once uploaded.
    receipt_key: Option<String>,
    /// When the state was last changed (RFC 3339).
    updated_at: String,
    error: Option<String>,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    let catalog = Catalog::open_read_only(&config.catalog_path())?;
    let answers: Vec<Answer> =
        args.paths.iter().map(|path| answer(config, catalog.as_ref(), path)).collect::<anyhow::Result<_>>()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &answers)?;
        writeln!(out)?;
        return Ok(Exit::Done);
    }
    for a in &answers {
        let verdict = a.verdict.replace('_', " ");
        writeln!(out, "{}: {verdict} — {}", printable(&a.path), printable(&a.explanation))?;
        for u in &a.destinations {
            let key = u.receipt_key.as_deref().map(|k| format!(" as {}", printable(k))).unwrap_or_default();
            let error = u.error.as_deref().map(|e| format!(" ({})", printable(e))).unwrap_or_default();
            writeln!(out, "  [{}] {}{key} since {}{error}", printable(&u.destination), u.state, u.updated_at)?;
        }
    }
    Ok(Exit::Done)
}

fn answer(config: &Config, catalog: Option<&Catalog>, asked: &Path) -> anyhow::Result<Answer> {
    let absolute = std::path::absolute(asked)?;
    let shown = absolute.display().to_string();
    let not = |reason, explanation: &str| Answer {
        path: shown.clone(),
        verdict: "not_backed_up",
        reason,
        explanation: explanation.to_owned(),
        destinations: Vec::new(),
    };
    let Some((source, path)) = source_of(config, &absolute) else {
        return Ok(not(
            "outside_sources",
            "it is in none of the sources; add its folder as a [[source]] to back it up",
        ));
    };
    let metadata = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(not("not_a_file", "it is not a file (a folder? ask about the files in it)")),
        Err(e) => return Ok(not("missing", &format!("it cannot be found: {e}"))),
    };
    let relative = match classify(source, &path) {
        Ok(relative) => relative,
        Err(reason) => return Ok(skipped(shown, reason)),
    };
    let root = source.path.to_str().unwrap_or_default();
    let rel = relative.as_os_str().as_bytes();
    let stat = stat_of(&metadata);
    let Some(catalog) = catalog else {
        return Ok(waiting(shown, "not_scanned", "no backup has run yet; run `photosync backup`"));
    };
    if let Some((recorded, jobs)) = catalog.current_jobs(root, rel)? {
        if recorded != stat {
            return Ok(waiting(shown, "changed", "it changed since the last scan; the next scan reads it again"));
        }
        return Ok(from_jobs(shown, &jobs));
    }
    if catalog.not_media_stat(root, rel)? == Some(stat) {
        return Ok(skipped(shown, SkipReason::NotMedia));
    }
    // Not looked at yet: what the next scan will make of it.
    let is_media = std::fs::File::open(&path)
        .and_then(|mut file| media::inspect(&mut file))
        .map(|inspection| matches!(inspection, Inspection::Media { .. }));
    Ok(match is_media {
        Ok(true) => {
            waiting(shown, "not_scanned", "it is new (or still changing); the next scan records it and queues it")
        }
        Ok(false) => skipped(shown, SkipReason::NotMedia),
        Err(e) => not("unreadable", &format!("it cannot be read: {e}; photosync needs read access")),
    })
}

/// The source `path` is in (the innermost, if sources nest), and `path`
/// spelt as a scan of that source spells it (through the source's own
/// path, whatever links either goes through).
fn source_of<'c>(config: &'c Config, path: &Path) -> Option<(&'c SourceConfig, PathBuf)> {
    let real = |p: &Path| {
        // A file's folder, not the file: a scan records a link by its own name.
        match (p.parent().and_then(|dir| dir.canonicalize().ok()), p.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => p.canonicalize().unwrap_or_else(|_| p.to_owned()),
        }
    };
    let real_path = real(path);
    config
        .sources
        .iter()
        .filter_map(|source| {
            let root = source.path.canonicalize().unwrap_or_else(|_| source.path.clone());
            let rest = real_path.strip_prefix(&root).ok()?;
            Some((source, source.path.join(rest), root.as_os_str().len()))
        })
        .max_by_key(|(_, _, depth)| *depth)
        .map(|(source, path, _)| (source, path))
}

fn waiting(path: String, reason: &'static str, explanation: &str) -> Answer {
    Answer { path, verdict: "waiting", reason, explanation: explanation.to_owned(), destinations: Vec::new() }
}

fn skipped(path: String, reason: SkipReason) -> Answer {
    let (code, explanation) = match reason {
        SkipReason::NotMedia => (
            "not_media",
            "its content is not a photo or video (whatever its name says); a file of a format photosync does not \
             know yet is worth a bug report",
        ),
        SkipReason::Hidden => ("hidden", "it is hidden (its name or a folder on its way starts with a dot)"),
        SkipReason::PartialDownload => (
            "partial_download",
            "its name marks a partial download or temporary file; it is backed up once it has its final name",
        ),
        SkipReason::OsMetadata => ("os_metadata", "it is a file the operating system keeps, never a photo"),
        SkipReason::Excluded => ("excluded", "your `include`/`exclude` rules for its source leave it out"),
    };
    Answer {
        path,
        verdict: "not_backed_up",
        reason: code,
        explanation: explanation.to_owned(),
        destinations: Vec::new(),
    }
}

fn from_jobs(path: String, jobs: &[JobView]) -> Answer {
    let destinations: Vec<Upload> = jobs
        .iter()
        .map(|job| Upload {
            destination: job.destination.clone(),
            state: job.state,
            receipt_key: job.receipt_key.clone(),
            updated_at: job.updated_at.to_rfc3339(),
            error: job.error.clone(),
        })
        .collect();
    let all = |state| !jobs.is_empty() && jobs.iter().all(|j| j.state == state);
    let any = |state| jobs.iter().any(|j| j.state == state);
    let (verdict, reason, explanation) = if all(StateName::Acknowledged) {
        ("backed_up", "acknowledged", "every destination holds it, proven".to_owned())
    } else if any(StateName::Failed) {
        ("not_backed_up", "failed", "its upload failed; fix the cause, then `photosync retry --failed`".to_owned())
    } else if jobs.is_empty() {
        ("waiting", "no_destination", "it is recorded, but no destination has a job for it yet".to_owned())
    } else {
        let pending: Vec<&str> =
            jobs.iter().filter(|j| j.state != StateName::Acknowledged).map(|j| j.state.as_str()).collect();
        ("waiting", "uploading", format!("its upload is under way ({})", pending.join(", ")))
    };
    Answer { path, verdict, reason, explanation, destinations }
}
