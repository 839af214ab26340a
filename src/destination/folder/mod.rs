//! The folder destination: a local disk or a mounted NAS.
//!
//! Each upload is copied to a hidden temporary name beside its target,
//! re-read and verified against the expected size and hash, made durable,
//! then published with a hard link, which fails instead of overwriting if
//! the name was taken meanwhile (a plain rename would clobber); the new name
//! is made durable before the upload reports it stored. Small files come in
//! batches ([`Destination::upload_many`]) and durability is paid per batch,
//! not per file (`durable`): the batch is copied, made durable with one
//! flush, published, and its names made durable with a second. A copy cut
//! short (pause, shutdown, kill -9) keeps its temporary file and the next
//! attempt carries on from its end; the whole copy is verified before it is
//! published either way, so a bad resume costs a fresh copy, never a wrong
//! file. The destination root is never created here: a missing root usually
//! means an unmounted disk, and writing into the empty mount point would be
//! wrong. `config` holds its keys.

mod config;
mod durable;
mod publish;

pub use config::FolderConfig;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use self::durable::{FileSystem, ToSync, flush};
use self::publish::{Published, publish};

use super::{
    Batching, Destination, DestinationError, Moved, ProgressFn, UploadRequest, Uploaded, Verdict, key_candidates,
    temp_name,
};
use crate::media::{hash_file, hash_open, read_retrying};
use crate::model::{ContentHash, JobId, Receipt, RemoteKey};

/// Copy granularity between progress reports.
const CHUNK: u64 = 8 * 1024 * 1024;

/// Copy granularity under a bandwidth limit.
const LIMITED_CHUNK: u64 = 256 * 1024;

/// The most files, and bytes, one batch takes: enough to make a flush
/// cheap per file, few enough that a batch's receipts come soon. A batch
/// spends much of its time waiting for the disk in its two flushes, while
/// the processor has nothing to do: four of them per upload slot keep it
/// busy. (A first backup of 100,000 small photos took 9.3–10.5 s with 4
/// batches at once, 7.7–8.2 s with 8 and 6.6–7.0 s with 16.)
const BATCH: Batching = Batching { files: 256, bytes: 64 << 20, per_slot: 4 };

/// A folder destination rooted at an absolute path.
#[derive(Debug, Clone)]
pub struct FolderDestination {
    root: PathBuf,
}

impl FolderDestination {
    /// A destination writing below `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Stores `uploads` on a blocking thread; one result per upload.
    async fn store_batch(&self, uploads: Vec<(UploadRequest, ProgressFn)>) -> Vec<Result<Uploaded, DestinationError>> {
        let (root, count) = (self.root.clone(), uploads.len());
        tokio::task::spawn_blocking(move || store_all(&root, &uploads)).await.unwrap_or_else(|e| {
            (0..count).map(|_| Err(DestinationError::transient(format!("folder upload panicked: {e}")))).collect()
        })
    }
}

#[async_trait]
impl Destination for FolderDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || check_root(&root))
            .await
            .map_err(|e| DestinationError::transient(format!("folder check panicked: {e}")))?
    }

    fn batching(&self) -> Option<Batching> {
        Some(BATCH)
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let mut results = self.store_batch(vec![(request, progress)]).await;
        results.pop().unwrap_or_else(|| Err(DestinationError::transient("the folder upload gave no result")))
    }

    async fn upload_many(&self, uploads: Vec<(UploadRequest, ProgressFn)>) -> Vec<Result<Uploaded, DestinationError>> {
        self.store_batch(uploads).await
    }

    async fn verify(&self, receipt: &Receipt, _deep: bool) -> Result<Verdict, DestinationError> {
        let (root, receipt) = (self.root.clone(), receipt.clone());
        tokio::task::spawn_blocking(move || {
            check_root(&root)?;
            let target = target_path(&root, &receipt.key)?;
            Ok(match fs::symlink_metadata(&target) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Verdict::Missing,
                Err(e) => return Err(write_error(&target, &e)),
                Ok(m) if !m.is_file() => Verdict::Differs("it is not a file".into()),
                Ok(m) if m.len() != receipt.size => {
                    Verdict::Differs(format!("{} bytes instead of {}", m.len(), receipt.size))
                }
                Ok(_) => match hash_file(&target) {
                    Ok((hash, _)) if hash == receipt.sha256 => Verdict::Holds,
                    Ok((hash, _)) => Verdict::Differs(format!(
                        "its content changed (sha256 {} instead of {})",
                        hash.short(12),
                        receipt.sha256.short(12)
                    )),
                    Err(e) => return Err(write_error(&target, &e)),
                },
            })
        })
        .await
        .map_err(|e| DestinationError::transient(format!("folder verify panicked: {e}")))?
    }

    async fn discard(&self, job: JobId, key: &RemoteKey, hash: &ContentHash) -> Result<(), DestinationError> {
        let temporaries = key_candidates(key, hash)
            .iter()
            .map(|candidate| target_path(&self.root, candidate).map(|target| temp_path(&target, job)))
            .collect::<Result<Vec<_>, _>>()?;
        tokio::task::spawn_blocking(move || remove_temporaries(&temporaries, job))
            .await
            .map_err(|e| DestinationError::transient(format!("folder discard panicked: {e}")))?
    }
}

/// Removes the temporary copies a job left (one per candidate name it tried).
fn remove_temporaries(temporaries: &[PathBuf], job: JobId) -> Result<(), DestinationError> {
    for path in temporaries {
        match fs::remove_file(path) {
            Ok(()) => tracing::info!(job = %job, "removed the temporary copy {}", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_error(path, &e)),
        }
    }
    Ok(())
}

fn check_root(root: &Path) -> Result<(), DestinationError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DestinationError::transient(format!("destination {} is not a folder", root.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DestinationError::transient(format!(
            "destination folder {} does not exist (is the disk mounted?)",
            root.display()
        ))),
        Err(e) => Err(DestinationError::transient(format!("cannot reach destination {}: {e}", root.display()))),
    }
}

/// What is already at a candidate name.
enum Existing {
    Nothing,
    /// On this device.
    SameContent(u64),
    OtherContent,
}

/// Stores a batch: copies each file (or finds it present), makes all the
/// copies durable together, publishes them, and makes their names durable
/// together. A copy whose name was taken meanwhile goes round again.
fn store_all(root: &Path, uploads: &[(UploadRequest, ProgressFn)]) -> Vec<Result<Uploaded, DestinationError>> {
    if let Err(e) = check_root(root) {
        return uploads.iter().map(|_| Err(e.clone())).collect();
    }
    let mut results: Vec<Option<Result<Uploaded, DestinationError>>> = uploads.iter().map(|_| None).collect();
    let fs = FileSystem::open(root);
    let mut folders = Folders::default();
    loop {
        let (mut found, mut staged, mut created) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (request, progress)) in uploads.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match copy(root, &fs, request, progress, &mut folders, &mut created) {
                Ok(Copied::Present(present)) => found.push((i, present)),
                Ok(Copied::Staged(copy)) => staged.push((i, copy)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // Folders made, even by copies that then failed: later copies into
        // them find them there and would not make them durable.
        // (Each fsynced: a folder may be on a file system mounted below the root.)
        let made = (!created.is_empty()).then(|| ToSync { device: None, files: Vec::new(), dirs: created });
        if found.is_empty() && staged.is_empty() {
            if let Some(made) = made
                && let Some(Err(e)) = flush(&fs, &[made]).pop()
            {
                tracing::warn!("{e}");
            }
            break;
        }
        // What was found may come from an attempt cut short before its flush.
        let made_folders = made.is_some();
        let syncs: Vec<ToSync> =
            found.iter().map(|(_, p)| p.sync.clone()).chain(staged.iter().map(|(_, s)| s.data())).chain(made).collect();
        let mut flushed = flush(&fs, &syncs);
        if made_folders && let Some(Err(e)) = flushed.pop() {
            // The copies' folders may not survive a power cut: neither may they.
            for result in flushed.iter_mut().skip(found.len()) {
                *result = Err(e.clone());
            }
        }
        let mut flushed = flushed.into_iter();
        for ((i, present), result) in found.into_iter().zip(flushed.by_ref()) {
            results[i] =
                Some(result.map(|()| Uploaded::AlreadyPresent(present.receipt)).map_err(DestinationError::transient));
        }
        let mut published = Vec::new();
        for ((i, copy), result) in staged.into_iter().zip(flushed) {
            if result.is_err() {
                // Its data may not be on the disk, and a later flush would
                // not say so: copy it again from the start next time.
                let _ = fs::remove_file(&copy.temp);
            }
            match result.map_err(DestinationError::transient).and_then(|()| copy.publish()) {
                Ok(true) => published.push((i, copy)),
                // Someone created the name while we copied: look at it again,
                // and at every name in its folder from now on.
                Ok(false) => {
                    if let Some(parent) = copy.target.parent() {
                        folders.made.remove(parent);
                    }
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let entries: Vec<ToSync> = published.iter().map(|(_, copy)| copy.entry()).collect();
        for ((i, copy), result) in published.into_iter().zip(flush(&fs, &entries)) {
            results[i] = Some(result.map(|()| Uploaded::Stored(copy.receipt)).map_err(DestinationError::transient));
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(DestinationError::transient("the folder upload gave no result"))))
        .collect()
}

/// What the copying step found or made.
enum Copied {
    /// The content is at a candidate name already.
    Present(Present),
    /// A verified copy under its temporary name, to be made durable and published.
    Staged(Staged),
}

struct Present {
    receipt: Receipt,
    sync: ToSync,
}

struct Staged {
    temp: PathBuf,
    target: PathBuf,
    receipt: Receipt,
    device: Option<u64>,
}

impl Staged {
    /// What must be durable before the copy is published: its data.
    fn data(&self) -> ToSync {
        ToSync { device: self.device, files: vec![self.temp.clone()], dirs: Vec::new() }
    }

    /// What must be durable before the copy counts as stored: its name.
    fn entry(&self) -> ToSync {
        ToSync {
            device: self.device,
            files: Vec::new(),
            dirs: self.target.parent().into_iter().map(Path::to_path_buf).collect(),
        }
    }

    /// Gives the copy its name, unless the name was taken meanwhile
    /// (`false`); the temporary name is gone either way.
    fn publish(&self) -> Result<bool, DestinationError> {
        let published = publish(&self.temp, &self.target);
        if !matches!(published, Ok(Published::Moved)) {
            let _ = fs::remove_file(&self.temp);
        }
        published.map(|p| p != Published::Taken)
    }
}

/// The folders a batch knows to be there (most of its files share a few).
#[derive(Default)]
struct Folders {
    known: HashSet<PathBuf>,
    /// Those it made itself, empty then: a name in them is free unless
    /// someone else wrote it since, which publishing finds out (it never
    /// replaces a name), so copies into them need not look first. A name
    /// found taken there takes its folder out of this set.
    made: HashSet<PathBuf>,
}

/// Finds the content at a candidate name, or copies it under the temporary
/// name of the first free one (carrying on from a copy cut short) and
/// verifies the copy; adds to `created` the parents of the folders it made.
/// Making all that durable is the caller's.
fn copy(
    root: &Path,
    fs: &FileSystem,
    request: &UploadRequest,
    progress: &ProgressFn,
    folders: &mut Folders,
    created: &mut Vec<PathBuf>,
) -> Result<Copied, DestinationError> {
    for key in key_candidates(&request.key, &request.hash) {
        let target = target_path(root, &key)?;
        let temp = temp_path(&target, request.job);
        let receipt = Receipt { key: key.clone(), size: request.size, sha256: request.hash.clone(), version: None };
        let parent = target.parent().unwrap_or(root);
        let found = if folders.made.contains(parent) {
            Existing::Nothing
        } else {
            existing(&target, request.size, &request.hash)?
        };
        match found {
            Existing::SameContent(device) => {
                // An earlier attempt may have been killed after publishing
                // but before removing its temporary copy.
                let _ = fs::remove_file(&temp);
                let dirs = target.parent().into_iter().map(Path::to_path_buf).collect();
                return Ok(Copied::Present(Present {
                    receipt,
                    sync: ToSync { device: Some(device), files: vec![target], dirs },
                }));
            }
            Existing::OtherContent => {
                tracing::info!(key = %key, "name taken by other content; trying the next name");
                let _ = fs::remove_file(&temp);
                continue;
            }
            Existing::Nothing => {}
        }
        if !folders.known.contains(parent) {
            if ensure_dir(root, parent, created)? {
                folders.made.insert(parent.to_path_buf());
            }
            folders.known.insert(parent.to_path_buf());
        }
        // A copy cut short keeps its temporary file, to carry on from.
        let device = write_verified(fs, request, &temp, progress)?;
        return Ok(Copied::Staged(Staged { temp, target, receipt, device: Some(device) }));
    }
    Err(DestinationError::permanent(format!("every candidate name for {} is taken by other content", request.key)))
}

/// `root` joined with a key that must stay below it.
fn target_path(root: &Path, key: &RemoteKey) -> Result<PathBuf, DestinationError> {
    let relative = Path::new(OsStr::from_bytes(&key.0));
    let safe = !key.0.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
    if safe {
        Ok(root.join(relative))
    } else {
        Err(DestinationError::permanent(format!("refusing to write outside the destination: {key}")))
    }
}

/// `.NAME.photosync-N.tmp` beside the target, NAME shortened so the whole
/// name stays within `NAME_MAX` (a long photo name must still fit).
fn temp_path(target: &Path, job: JobId) -> PathBuf {
    let name = target.file_name().unwrap_or_default().as_bytes();
    target.with_file_name(OsStr::from_bytes(&temp_name(name, job)))
}

fn existing(target: &Path, size: u64, hash: &ContentHash) -> Result<Existing, DestinationError> {
    let metadata = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(write_error(target, &e)),
    };
    if !metadata.is_file() || metadata.len() != size {
        return Ok(Existing::OtherContent);
    }
    let (found, _) = hash_file(target).map_err(|e| write_error(target, &e))?;
    Ok(if &found == hash { Existing::SameContent(metadata.dev()) } else { Existing::OtherContent })
}

/// Creates the folders from `root` down to `dir`; adds to `created` the
/// folders whose new entries must be made durable (the parent of each one
/// created). `true` when it created `dir` itself.
fn ensure_dir(root: &Path, dir: &Path, created: &mut Vec<PathBuf>) -> Result<bool, DestinationError> {
    let Ok(relative) = dir.strip_prefix(root) else { return Ok(false) };
    if dir.is_dir() {
        return Ok(false);
    }
    let mut current = root.to_path_buf();
    let mut made = false;
    for component in relative.components() {
        let parent = current.clone();
        current.push(component);
        made = match fs::create_dir(&current) {
            Ok(()) => {
                created.push(parent);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() => false,
            Err(e) => return Err(write_error(&current, &e)),
        };
    }
    Ok(made)
}

/// Copies the source to `temp` (carrying on from the end of a copy an
/// earlier attempt cut short) and checks it holds exactly the expected
/// content; returns the device it is on. A copy that does not match is
/// removed; if the source itself no longer has the scanned content, that is
/// [`super::Retry::SourceChanged`]. Making it durable is the caller's.
fn write_verified(
    fs: &FileSystem,
    request: &UploadRequest,
    temp: &Path,
    progress: &ProgressFn,
) -> Result<u64, DestinationError> {
    let mut source = File::open(&request.source).map_err(|e| read_error(&request.source, &e))?;
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(temp)
        .map_err(|e| write_error(temp, &e))?;
    let metadata = out.metadata().map_err(|e| write_error(temp, &e))?;
    let (kept, device) = (metadata.len(), metadata.dev());
    let mut at = 0;
    if kept > 0 && kept <= request.size {
        at = kept;
        out.seek(SeekFrom::Start(kept)).map_err(|e| write_error(temp, &e))?;
        source.seek(SeekFrom::Start(kept)).map_err(|e| read_error(&request.source, &e))?;
        tracing::info!(path = %request.source.display(), bytes = kept, "carrying on with a copy cut short");
        progress(Moved::Resumed(kept));
    } else if kept > 0 {
        out.set_len(0).map_err(|e| write_error(temp, &e))?;
    }
    // Small chunks under a bandwidth limit keep the rate smooth.
    let chunk = if request.throttle.is_limited() { LIMITED_CHUNK } else { CHUNK };
    // The scanned length is copied, the last chunk asking for one byte more:
    // a copy that comes back short by that byte found the source's end
    // there (a small photo takes one call), one that does not found it
    // grown; a copy that ends with the chunk leaves one read to tell.
    let mut ended = false;
    while at < request.size {
        if request.cancelled() {
            return Err(DestinationError::interrupted());
        }
        let left = request.size - at;
        let asked = if chunk < left { chunk } else { left + 1 };
        let copied = copy_chunk(&mut source, &mut out, asked).map_err(|e| copy_error(request, temp, &e))?;
        if copied == 0 {
            break;
        }
        ended = copied < asked;
        at += copied;
        let sent = copied.min(left);
        progress(Moved::Sent(sent));
        request.throttle.consume_blocking(sent);
    }
    let grew = at > request.size
        || (at == request.size
            && !ended
            && read_retrying(&mut source, &mut [0u8; 1]).map_err(|e| read_error(&request.source, &e))? > 0);
    if grew {
        let _ = fs::remove_file(temp);
        return Err(DestinationError::source_changed(format!(
            "{} grew while it was being copied (it had {} bytes when read)",
            request.source.display(),
            request.size
        )));
    }
    let _ = out.set_modified(request.modified);
    let read_back = if fs.is_local(device) {
        // Its page cache is the file: read it back without opening it again.
        hash_open(&mut out, request.size)
    } else {
        // A network file system reports a failed write when the copy is
        // flushed (or closed, which says nothing): flush it, then read it
        // back through a new handle, which sees what arrived.
        out.sync_all().map_err(|e| write_error(temp, &e))?;
        drop(out);
        hash_file(temp)
    };
    let (hash, size) = read_back.map_err(|e| write_error(temp, &e))?;
    if size == request.size && hash == request.hash {
        return Ok(device);
    }
    let _ = fs::remove_file(temp);
    let copied = format!("copied {size} bytes, sha256 {}", hash.short(12));
    let expected = format!("expected {} bytes, sha256 {}", request.size, request.hash.short(12));
    match hash_file(&request.source) {
        Ok((now, _)) if now == request.hash => Err(DestinationError::transient(format!(
            "the copy of {} does not match what was read ({expected}; {copied}); it is copied again",
            request.source.display()
        ))),
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(read_error(&request.source, &e)),
        _ => Err(DestinationError::source_changed(format!(
            "{} changed while it was being copied ({expected}; {copied})",
            request.source.display()
        ))),
    }
}

fn read_error(path: &Path, e: &io::Error) -> DestinationError {
    let message = format!("cannot read {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound => {
            DestinationError::source_changed(format!("{} vanished while it was being uploaded", path.display()))
        }
        io::ErrorKind::PermissionDenied => DestinationError::permanent(message),
        _ => DestinationError::transient(message),
    }
}

/// Copies up to `chunk` bytes from `source` to `out` at their positions:
/// in the kernel where it can (`copy_file_range`, which shares extents on
/// file systems that can), by reading and writing otherwise: where the
/// kernel refuses (another file system, an old kernel, a seccomp filter) or
/// copies nothing (some file systems say 0 before the end: reading tells).
/// (`io::copy` tries `copy_file_range` too, but asks for both files' status
/// first each time: two system calls more per small photo.)
fn copy_chunk(source: &mut File, out: &mut File, chunk: u64) -> io::Result<u64> {
    /// A writer `io::copy` cannot see is a file, so it reads and writes.
    struct Plain<'f>(&'f mut File);
    impl io::Write for Plain<'_> {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }
    #[cfg(target_os = "linux")]
    loop {
        use rustix::io::Errno;
        let len = usize::try_from(chunk).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(&*source, None, &*out, None, len) {
            Ok(n) if n > 0 => return Ok(n as u64),
            Err(Errno::INTR) => {}
            Ok(_) | Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL | Errno::BADF | Errno::PERM) => {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    io::copy(&mut source.take(chunk), &mut Plain(out))
}

fn copy_error(request: &UploadRequest, temp: &Path, e: &io::Error) -> DestinationError {
    // A copy does not say which side failed; the source is only read, so
    // errors the source can produce are attributed to it.
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => read_error(&request.source, e),
        _ => write_error(temp, e),
    }
}

/// Errors writing the destination: a name the file system rejects cannot
/// succeed later; everything else (full disk, permissions, a vanished mount,
/// I/O errors) may be fixed, so it is retried.
fn write_error(path: &Path, e: &io::Error) -> DestinationError {
    let message = format!("cannot write {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::InvalidFilename | io::ErrorKind::InvalidInput => DestinationError::permanent(message),
        _ => DestinationError::transient(message),
    }
}

#[cfg(test)]
mod tests;
