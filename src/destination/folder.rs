//! The folder destination: a local disk or a mounted NAS.
//!
//! Each upload is copied to a hidden temporary name beside its target,
//! fsynced, re-read and verified against the expected size and hash, then
//! published with a hard link, which fails instead of overwriting if the
//! name was taken meanwhile (a plain rename would clobber). The parent
//! directory is fsynced so the new name survives a power cut. The
//! destination root is never created here: a missing root usually means an
//! unmounted disk, and writing into the empty mount point would be wrong.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use super::{Destination, DestinationError, ProgressFn, UploadRequest, Uploaded, key_candidates};
use crate::media::hash_file;
use crate::model::{ContentHash, JobId, Receipt, RemoteKey};

/// Copy granularity between progress reports.
const CHUNK: u64 = 8 * 1024 * 1024;

/// Copy granularity under a bandwidth limit.
const LIMITED_CHUNK: u64 = 256 * 1024;

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
}

#[async_trait]
impl Destination for FolderDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || check_root(&root))
            .await
            .map_err(|e| DestinationError::transient(format!("folder check panicked: {e}")))?
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || store(&root, &request, &progress))
            .await
            .map_err(|e| DestinationError::transient(format!("folder upload panicked: {e}")))?
    }

    async fn discard(&self, job: JobId, key: &RemoteKey) -> Result<(), DestinationError> {
        let dir = target_path(&self.root, key)?.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::task::spawn_blocking(move || remove_temporaries(&dir, job))
            .await
            .map_err(|e| DestinationError::transient(format!("folder discard panicked: {e}")))?
    }
}

/// Removes the temporary copies `job` left in `dir` (one per candidate name
/// it tried); a missing folder has none.
fn remove_temporaries(dir: &Path, job: JobId) -> Result<(), DestinationError> {
    let suffix = temp_suffix(job);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(write_error(dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| write_error(dir, &e))?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") && bytes.ends_with(suffix.as_bytes()) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(job = %job, "removed the temporary copy {}", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(write_error(&path, &e)),
            }
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
    SameContent,
    OtherContent,
}

fn store(root: &Path, request: &UploadRequest, progress: &ProgressFn) -> Result<Uploaded, DestinationError> {
    check_root(root)?;
    let mut candidates = key_candidates(&request.key, &request.hash).into_iter();
    let mut candidate = candidates.next();
    while let Some(key) = candidate {
        let target = target_path(root, &key)?;
        let temp = temp_path(&target, request);
        // An earlier attempt of this job may have been killed after writing
        // (or even publishing) but before removing its temporary file.
        let _ = fs::remove_file(&temp);
        let receipt = || Receipt { key: key.clone(), size: request.size, sha256: request.hash.clone(), version: None };
        match existing(&target, request.size, &request.hash)? {
            Existing::SameContent => return Ok(Uploaded::AlreadyPresent(receipt())),
            Existing::OtherContent => {
                tracing::info!(key = %key, "name taken by other content; trying the next name");
                candidate = candidates.next();
                continue;
            }
            Existing::Nothing => {}
        }
        let parent = target.parent().unwrap_or(root);
        ensure_dir(root, parent)?;
        let published = write_verified(request, &temp, progress).and_then(|()| publish(&temp, &target));
        let _ = fs::remove_file(&temp);
        if published? {
            sync_dir(parent)?;
            return Ok(Uploaded::Stored(receipt()));
        }
        // Someone created the name while we copied: look at it again.
        candidate = Some(key);
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

fn temp_path(target: &Path, request: &UploadRequest) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(temp_suffix(request.job));
    target.with_file_name(name)
}

/// How every temporary copy of `job` ends: `.NAME.photosync-N.tmp`.
fn temp_suffix(job: JobId) -> String {
    format!(".photosync-{job}.tmp")
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
    Ok(if &found == hash { Existing::SameContent } else { Existing::OtherContent })
}

/// Creates the folders from `root` down to `dir`, fsyncing each new entry's parent.
fn ensure_dir(root: &Path, dir: &Path) -> Result<(), DestinationError> {
    let Ok(relative) = dir.strip_prefix(root) else { return Ok(()) };
    let mut current = root.to_path_buf();
    for component in relative.components() {
        let parent = current.clone();
        current.push(component);
        match fs::create_dir(&current) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() => {}
            Err(e) => return Err(write_error(&current, &e)),
        }
    }
    Ok(())
}

/// Copies the source to `temp`, fsyncs it and checks it holds exactly the
/// expected content.
fn write_verified(request: &UploadRequest, temp: &Path, progress: &ProgressFn) -> Result<(), DestinationError> {
    let mut source = File::open(&request.source).map_err(|e| read_error(&request.source, &e))?;
    let mut out =
        OpenOptions::new().write(true).create(true).truncate(true).open(temp).map_err(|e| write_error(temp, &e))?;
    // Small chunks under a bandwidth limit keep the rate smooth.
    let chunk = if request.throttle.is_limited() { LIMITED_CHUNK } else { CHUNK };
    loop {
        if request.cancelled() {
            return Err(DestinationError::interrupted());
        }
        // `io::copy` between files uses copy_file_range (or a reflink) where the OS can.
        let copied = io::copy(&mut (&mut source).take(chunk), &mut out).map_err(|e| copy_error(request, temp, &e))?;
        if copied == 0 {
            break;
        }
        progress(copied);
        request.throttle.consume_blocking(copied);
    }
    let _ = out.set_modified(request.modified);
    out.sync_all().map_err(|e| write_error(temp, &e))?;
    drop(out);
    let (hash, size) = hash_file(temp).map_err(|e| write_error(temp, &e))?;
    if size != request.size || hash != request.hash {
        return Err(DestinationError::transient(format!(
            "{} changed while it was being copied (expected {} bytes, sha256 {}; copied {size} bytes, sha256 {})",
            request.source.display(),
            request.size,
            request.hash.short(12),
            hash.short(12),
        )));
    }
    Ok(())
}

/// Gives `temp` its final name without ever replacing an existing file.
/// `Ok(false)` when the name was taken meanwhile.
fn publish(temp: &Path, target: &Path) -> Result<bool, DestinationError> {
    match fs::hard_link(temp, target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // Some file systems (FAT, some network mounts) have no hard links:
        // fall back to check-then-rename, which only races with other writers.
        Err(e) if matches!(e.raw_os_error(), Some(code) if is_no_link_support(code)) => {
            if target.exists() {
                return Ok(false);
            }
            fs::rename(temp, target).map_err(|e| write_error(target, &e))?;
            Ok(true)
        }
        Err(e) => Err(write_error(target, &e)),
    }
}

fn is_no_link_support(code: i32) -> bool {
    // EPERM, EXDEV, EOPNOTSUPP / ENOTSUP, ENOSYS on Linux and macOS.
    const EPERM: i32 = 1;
    const EXDEV: i32 = 18;
    #[cfg(target_os = "linux")]
    const CODES: [i32; 5] = [EPERM, EXDEV, 95, 38, 524];
    #[cfg(not(target_os = "linux"))]
    const CODES: [i32; 5] = [EPERM, EXDEV, 45, 78, 102];
    CODES.contains(&code)
}

fn sync_dir(dir: &Path) -> Result<(), DestinationError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| write_error(dir, &e))
}

fn read_error(path: &Path, e: &io::Error) -> DestinationError {
    let message = format!("cannot read {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound => {
            DestinationError::permanent(format!("{} was deleted before it was uploaded", path.display()))
        }
        io::ErrorKind::PermissionDenied => DestinationError::permanent(message),
        _ => DestinationError::transient(message),
    }
}

fn copy_error(request: &UploadRequest, temp: &Path, e: &io::Error) -> DestinationError {
    // io::copy does not say which side failed; the source is only read, so
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
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::model::JobId;

    fn request(dir: &Path, name: &str, content: &[u8]) -> UploadRequest {
        let source = dir.join(format!("src-{name}"));
        fs::write(&source, content).expect("write source");
        let (hash, size) = hash_file(&source).expect("hash");
        UploadRequest {
            job: JobId(1),
            source,
            key: RemoteKey(format!("sub/{name}").into_bytes()),
            size,
            hash,
            modified: SystemTime::UNIX_EPOCH,
            cancel: Arc::default(),
            throttle: Arc::default(),
        }
    }

    fn no_progress() -> ProgressFn {
        Arc::new(|_| {})
    }

    #[test]
    fn stores_then_finds_it_present_then_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dest");
        fs::create_dir(&root).expect("root");
        let first = request(dir.path(), "a.jpg", b"one");
        let stored = store(&root, &first, &no_progress()).expect("store");
        assert!(matches!(&stored, Uploaded::Stored(r) if r.key.0 == b"sub/a.jpg"));
        assert_eq!(fs::read(root.join("sub/a.jpg")).expect("read"), b"one");
        let again = store(&root, &first, &no_progress()).expect("store again");
        assert_eq!(again, Uploaded::AlreadyPresent(stored.receipt().clone()));

        let edited = request(dir.path(), "a.jpg", b"two");
        let second = store(&root, &edited, &no_progress()).expect("store edited");
        let key = second.receipt().key.to_string();
        assert!(key.starts_with("sub/a-") && Path::new(&key).extension() == Some(OsStr::new("jpg")), "{key}");
        assert_eq!(fs::read(root.join("sub/a.jpg")).expect("read"), b"one", "old version kept");
        assert_eq!(fs::read(root.join(&key)).expect("read"), b"two");
        let leftovers: Vec<_> = fs::read_dir(root.join("sub")).expect("ls").filter_map(Result::ok).collect();
        assert_eq!(leftovers.len(), 2, "no temporary files left");
    }

    /// Regression: a backup killed between publishing a file and removing
    /// its temporary copy left `.IMG.photosync-N.tmp` behind for good,
    /// because the retry found the file already present and stopped there.
    #[test]
    fn retry_after_a_kill_removes_the_temporary_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dest");
        let req = request(dir.path(), "a.jpg", b"content");
        fs::create_dir_all(root.join("sub")).expect("root");
        fs::write(root.join("sub/a.jpg"), b"content").expect("published");
        let temp = temp_path(&root.join("sub/a.jpg"), &req);
        fs::write(&temp, b"content").expect("leftover");
        let uploaded = store(&root, &req, &no_progress()).expect("store");
        assert!(matches!(uploaded, Uploaded::AlreadyPresent(_)));
        assert!(!temp.exists(), "leftover temporary file removed");
    }

    /// A job cut short by a crash and then cancelled (its file was deleted)
    /// never runs again, so only `discard` can remove its temporary copies.
    #[tokio::test]
    async fn discard_removes_only_the_cancelled_jobs_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dest");
        fs::create_dir_all(root.join("sub")).expect("root");
        let req = request(dir.path(), "a.jpg", b"content");
        let own = temp_path(&root.join("sub/a.jpg"), &req);
        let own_candidate = temp_path(&root.join("sub/a-0123abcd.jpg"), &req);
        let other = temp_path(&root.join("sub/b.jpg"), &UploadRequest { job: JobId(11), ..req.clone() });
        let kept = ["sub/a.jpg", "sub/photosync-1.tmp"];
        for path in [&own, &own_candidate, &other].into_iter().cloned().chain(kept.iter().map(|k| root.join(k))) {
            fs::write(path, b"partial").expect("write");
        }
        let destination = FolderDestination { root: root.clone() };
        destination.discard(JobId(1), &req.key).await.expect("discard");
        assert!(!own.exists() && !own_candidate.exists(), "the job's temporaries are gone");
        assert!(other.exists(), "job 11's temporary copy is not job 1's to remove");
        for k in kept {
            assert!(root.join(k).exists(), "{k} kept");
        }
        // Nothing to do when the folder was never created.
        let missing = RemoteKey(b"never/made/x.jpg".to_vec());
        destination.discard(JobId(1), &missing).await.expect("discard without a folder");
    }

    #[test]
    fn missing_root_is_transient_and_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("not-mounted");
        let err = store(&root, &request(dir.path(), "a.jpg", b"x"), &no_progress()).expect_err("no root");
        assert!(err.retryable(), "{err}");
        assert!(!root.exists());
    }

    #[test]
    fn changed_source_fails_verification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dest");
        fs::create_dir(&root).expect("root");
        let req = request(dir.path(), "a.jpg", b"original");
        fs::write(&req.source, b"modified").expect("modify");
        let err = store(&root, &req, &no_progress()).expect_err("mismatch");
        assert!(err.retryable() && err.message.contains("changed"), "{err}");
        assert!(!root.join("sub/a.jpg").exists());
    }

    #[test]
    fn a_cancelled_upload_stops_without_publishing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dest");
        fs::create_dir(&root).expect("root");
        let req = request(dir.path(), "a.jpg", b"content");
        req.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        let err = store(&root, &req, &no_progress()).expect_err("cancelled");
        assert_eq!(err.retry, super::super::Retry::Interrupted);
        let left = fs::read_dir(root.join("sub")).map_or(0, Iterator::count);
        assert_eq!(left, 0, "nothing published, no temporary file left");
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        for key in [&b"../x.jpg"[..], b"/etc/x.jpg", b"a/../../x.jpg", b""] {
            assert!(target_path(Path::new("/dest"), &RemoteKey(key.to_vec())).is_err(), "{key:?}");
        }
    }
}
