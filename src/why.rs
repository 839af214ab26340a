//! `photosync why PATH…`: whether a file is backed up, waiting (and for
//! what), or not backed up (why, and what would change that), from the
//! sources' rules, the catalog and, for a file no scan has seen, its
//! content.

use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, CatalogError, JobView};
use crate::config::SourceConfig;
use crate::discover::{SkipReason, classify, stat_of};
use crate::media::group::Folders;
use crate::media::{self, sidecar};
use crate::model::{AssetInfo, StateName, Timestamp};

/// The answer for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The path asked about, absolute.
    pub path: String,
    /// `backed_up`, `waiting` or `not_backed_up`.
    pub verdict: &'static str,
    /// Why, as a word for scripts (`acknowledged`, `not_scanned`, `not_media`…).
    pub reason: &'static str,
    /// Why, and what would change it, for people.
    pub explanation: String,
    /// Its upload to each destination, once a scan has recorded it.
    pub destinations: Vec<Upload>,
    /// What it is and when it was taken, once a scan has read that.
    pub info: Option<AssetInfo>,
    /// The other files of its group (a Live Photo's video, a raw's JPEG,
    /// sidecars), absolute: it is backed up only once they all are.
    pub group: Vec<String>,
}

/// The upload of a file to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The destination's name.
    pub destination: String,
    /// The job's state.
    pub state: StateName,
    /// Where the destination keeps it, once uploaded.
    pub receipt_key: Option<String>,
    /// When the state last changed.
    pub updated_at: Timestamp,
    /// The job's current error.
    pub error: Option<String>,
}

/// What photosync makes of the file at `asked` (relative paths are taken
/// from the current folder), given `sources` and the `catalog` (`None`
/// before the first backup).
pub fn answer(sources: &[SourceConfig], catalog: Option<&Catalog>, asked: &Path) -> Result<Answer, CatalogError> {
    let absolute = std::path::absolute(asked).unwrap_or_else(|_| asked.to_owned());
    let shown = absolute.display().to_string();
    let not = |reason, explanation: &str| Answer {
        path: shown.clone(),
        verdict: "not_backed_up",
        reason,
        explanation: explanation.to_owned(),
        destinations: Vec::new(),
        info: None,
        group: Vec::new(),
    };
    let Some((source, path)) = source_of(sources, &absolute) else {
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
        let mut answer = from_jobs(shown, &jobs);
        answer.info = catalog.current_info(root, rel)?;
        check_group(&mut answer, catalog, source, &path, rel)?;
        return Ok(answer);
    }
    if catalog.not_media_stat(root, rel)? == Some(stat) {
        return Ok(skipped(shown, SkipReason::NotMedia));
    }
    if let Some(kind) = sidecar::kind_of(&path) {
        return Ok(
            match sidecar::partner(&path, kind, &mut Folders::default()).filter(|p| classify(source, p).is_ok()) {
                Some(partner) => {
                    let name = partner.file_name().unwrap_or_default().to_string_lossy();
                    waiting(
                        shown,
                        "not_scanned",
                        &format!("a sidecar of {name}; the next scan records it, dated as it"),
                    )
                }
                None => not(
                    "no_partner",
                    "a sidecar (.xmp, .AAE, Takeout .json) is backed up only beside the photo or video it describes, \
                 and there is none here",
                ),
            },
        );
    }
    // Not looked at yet: what the next scan will make of it (its first
    // bytes say; a big video is not read through).
    let is_media = std::fs::File::open(&path).and_then(|file| {
        let mut head = Vec::with_capacity(media::HEAD);
        std::io::Read::take(file, media::HEAD as u64).read_to_end(&mut head)?;
        Ok(media::sniff(&head).is_some())
    });
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
fn source_of<'c>(sources: &'c [SourceConfig], path: &Path) -> Option<(&'c SourceConfig, PathBuf)> {
    let real = |p: &Path| {
        // A file's folder, not the file: a scan records a link by its own name.
        match (p.parent().and_then(|dir| dir.canonicalize().ok()), p.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => p.canonicalize().unwrap_or_else(|_| p.to_owned()),
        }
    };
    let real_path = real(path);
    sources
        .iter()
        .filter_map(|source| {
            let root = source.path.canonicalize().unwrap_or_else(|_| source.path.clone());
            let rest = real_path.strip_prefix(&root).ok()?;
            Some((source, source.path.join(rest), root.as_os_str().len()))
        })
        .max_by_key(|(_, _, depth)| *depth)
        .map(|(source, path, _)| (source, path))
}

/// A file backed up on its own is not backed up while the rest of its group
/// is not: its key and the members the catalog records, and the photos and
/// videos beside it with its stem (one that cannot be read is never
/// recorded, and must not go unnoticed).
fn check_group(
    answer: &mut Answer,
    catalog: &Catalog,
    source: &SourceConfig,
    path: &Path,
    rel: &[u8],
) -> Result<(), CatalogError> {
    let root = source.path.to_str().unwrap_or_default();
    let key = answer.info.as_ref().and_then(|i| i.group.as_ref()).map_or_else(|| rel.to_vec(), |g| g.key.clone());
    let mut others: std::collections::BTreeSet<Vec<u8>> = catalog.group_members(root, &key)?.into_iter().collect();
    // The files beside it, and beside its key (a sidecar's stem is not the
    // photo's).
    let mut folders = Folders::default();
    let mut siblings = folders.siblings(path);
    siblings.extend(folders.siblings(&source.path.join(std::ffi::OsStr::from_bytes(&key))));
    for sibling in siblings {
        let Ok(relative) = classify(source, &sibling) else { continue };
        let relative = relative.as_os_str().as_bytes().to_vec();
        // A sibling recorded in another group (taken at another time) is
        // not this one's; one never recorded may be a member that cannot
        // be read.
        let joined = match catalog.current_info(root, &relative)? {
            Some(info) => info.group.is_some_and(|g| g.key == key),
            None => catalog.current_jobs(root, &relative)?.is_none(),
        };
        if joined && relative != key {
            others.insert(relative);
        }
    }
    if others.is_empty() && key == rel {
        return Ok(());
    }
    others.insert(key);
    others.remove(rel);
    let (mut missing, mut failed) = (Vec::new(), false);
    for other in &others {
        let name = String::from_utf8_lossy(other).into_owned();
        match catalog.current_jobs(root, other)? {
            Some((_, jobs)) if !jobs.is_empty() && jobs.iter().all(|j| j.state == StateName::Acknowledged) => {}
            Some((_, jobs)) if jobs.iter().any(|j| j.state == StateName::Failed) => {
                failed = true;
                missing.push(name);
            }
            _ => missing.push(name),
        }
    }
    answer.group =
        others.iter().map(|o| source.path.join(std::ffi::OsStr::from_bytes(o)).display().to_string()).collect();
    if answer.verdict == "backed_up" && !missing.is_empty() {
        answer.verdict = if failed { "not_backed_up" } else { "waiting" };
        answer.reason = "group_incomplete";
        answer.explanation = format!(
            "every destination holds it, but not yet all of its group: {} (`photosync why` on each says why)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn waiting(path: String, reason: &'static str, explanation: &str) -> Answer {
    Answer {
        path,
        verdict: "waiting",
        reason,
        explanation: explanation.to_owned(),
        destinations: Vec::new(),
        info: None,
        group: Vec::new(),
    }
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
        info: None,
        group: Vec::new(),
    }
}

fn from_jobs(path: String, jobs: &[JobView]) -> Answer {
    let destinations: Vec<Upload> = jobs
        .iter()
        .map(|job| Upload {
            destination: job.destination.clone(),
            state: job.state,
            receipt_key: job.receipt_key.clone(),
            updated_at: job.updated_at,
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
    Answer { path, verdict, reason, explanation, destinations, info: None, group: Vec::new() }
}
