//! Tests of the folder destination: storing, finding, never overwriting,
//! carrying on after an interruption.

use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::destination::Retry;
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
        taken: None,
        subject: Arc::default(),
        live_video: None,
        group_key: None,
        sha1: None,
        cancel: CancellationToken::new(),
        throttle: Arc::default(),
    }
}

fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

/// One upload, as the scheduler runs it.
fn store(root: &Path, request: &UploadRequest, progress: &ProgressFn) -> Result<Uploaded, DestinationError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    runtime.block_on(FolderDestination::new(root.to_path_buf()).upload(request.clone(), Arc::clone(progress)))
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
    let temp = temp_path(&root.join("sub/a.jpg"), req.job);
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
    let own = temp_path(&root.join("sub/a.jpg"), JobId(1));
    let suffixed = key_candidates(&req.key, &req.hash)[1].to_string();
    let own_candidate = temp_path(&root.join(&suffixed), JobId(1));
    let other = temp_path(&root.join("sub/b.jpg"), JobId(11));
    let kept = ["sub/a.jpg", "sub/photosync-1.tmp"];
    for path in [&own, &own_candidate, &other].into_iter().cloned().chain(kept.iter().map(|k| root.join(k))) {
        fs::write(path, b"partial").expect("write");
    }
    let destination = FolderDestination::new(root.clone());
    destination.discard(JobId(1), &req.key, &req.hash).await.expect("discard");
    assert!(!own.exists() && !own_candidate.exists(), "the job's temporaries are gone");
    assert!(other.exists(), "job 11's temporary copy is not job 1's to remove");
    for k in kept {
        assert!(root.join(k).exists(), "{k} kept");
    }
    // Nothing to do when the folder was never created.
    let missing = RemoteKey(b"never/made/x.jpg".to_vec());
    destination.discard(JobId(1), &missing, &req.hash).await.expect("discard without a folder");
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
    assert_eq!(err.retry, Retry::SourceChanged, "{err}");
    assert!(err.message.contains("changed"), "{err}");
    assert!(!root.join("sub/a.jpg").exists());
    assert_eq!(fs::read_dir(root.join("sub")).map_or(0, Iterator::count), 0, "the bad copy is removed");
}

/// The copy stops at the scanned length; a source that grew since it was
/// read is not acknowledged as the version scanned (its new version is
/// scanned again), and nothing is left at the destination.
#[test]
fn grown_source_fails_as_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir(&root).expect("root");
    let req = request(dir.path(), "a.jpg", b"original");
    fs::write(&req.source, b"original and more").expect("append");
    let err = store(&root, &req, &no_progress()).expect_err("grown");
    assert_eq!(err.retry, Retry::SourceChanged, "{err}");
    assert!(err.message.contains("grew"), "{err}");
    assert!(!root.join("sub/a.jpg").exists());
    assert_eq!(fs::read_dir(root.join("sub")).map_or(0, Iterator::count), 0, "the partial copy is removed");
}

/// The copy asks for a byte more than is left, to find the source's end
/// in the same call; progress counts the scanned bytes, never that byte.
#[test]
fn progress_counts_the_scanned_bytes_whether_the_source_grew_or_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir(&root).expect("root");
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress: ProgressFn = {
        let counted = Arc::clone(&counted);
        Arc::new(move |moved| {
            if let Moved::Sent(n) = moved {
                counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let req = request(dir.path(), "a.jpg", b"original");
    store(&root, &req, &progress).expect("store");
    assert_eq!(counted.swap(0, std::sync::atomic::Ordering::Relaxed), 8);
    let grown = request(dir.path(), "b.jpg", b"original");
    fs::write(&grown.source, b"original and more").expect("append");
    store(&root, &grown, &progress).expect_err("grown");
    assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), 8);
}

/// A copy into a folder its batch made does not look whether its name is
/// free (the folder was empty); a name someone wrote meanwhile is still
/// never replaced: publishing finds it taken, and the copy goes to the
/// next name.
#[test]
fn a_name_taken_in_a_folder_the_batch_made_is_never_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir(&root).expect("root");
    let req = request(dir.path(), "a.jpg", b"ours");
    let theirs = root.join("sub/a.jpg");
    let progress: ProgressFn = {
        let theirs = theirs.clone();
        // Called once the copy is written, before it is published.
        Arc::new(move |_| {
            if !theirs.exists() {
                fs::write(&theirs, b"theirs").expect("someone else's file");
            }
        })
    };
    let stored = store(&root, &req, &progress).expect("store");
    let key = stored.receipt().key.to_string();
    assert_ne!(key, "sub/a.jpg");
    assert_eq!(fs::read(&theirs).expect("theirs"), b"theirs");
    assert_eq!(fs::read(root.join(&key)).expect("ours"), b"ours");
}

/// Regression: a copy cut short started again from zero, so under
/// repeated interruptions big videos never finished and starved
/// everything queued behind them.
#[test]
fn a_copy_cut_short_carries_on_from_its_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir(&root).expect("root");
    let content: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
    let req = request(dir.path(), "clip.mp4", &content);
    let chunks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Stop after the first chunk, as a pause would.
    let cancel_after_one: ProgressFn = {
        let (cancel, chunks) = (req.cancel.clone(), Arc::clone(&chunks));
        Arc::new(move |_| {
            chunks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cancel.cancel();
        })
    };
    let err = store(&root, &req, &cancel_after_one).expect_err("interrupted");
    assert_eq!(err.retry, Retry::Interrupted);
    let temp = temp_path(&root.join("sub/clip.mp4"), req.job);
    assert_eq!(fs::metadata(&temp).expect("kept").len(), CHUNK, "the copy so far is kept");
    assert!(!root.join("sub/clip.mp4").exists(), "nothing published");

    let moved = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record: ProgressFn = {
        let moved = Arc::clone(&moved);
        Arc::new(move |m| moved.lock().expect("lock").push(m))
    };
    let again = UploadRequest { cancel: CancellationToken::new(), ..req.clone() };
    assert!(matches!(store(&root, &again, &record).expect("resumed"), Uploaded::Stored(_)));
    let moved = moved.lock().expect("lock").clone();
    assert_eq!(moved[0], Moved::Resumed(CHUNK));
    let sent: u64 = moved.iter().map(|m| if let Moved::Sent(n) = m { *n } else { 0 }).sum();
    assert_eq!(sent, content.len() as u64 - CHUNK, "only the rest was copied");
    assert_eq!(fs::read(root.join("sub/clip.mp4")).expect("read"), content);
    assert!(!temp.exists());
}

/// A kept copy that does not match the file (it changed in between)
/// is never published: the whole copy is verified, then redone.
#[test]
fn a_bad_kept_copy_is_discarded_not_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir_all(root.join("sub")).expect("root");
    let req = request(dir.path(), "a.jpg", b"the real content");
    let temp = temp_path(&root.join("sub/a.jpg"), req.job);
    fs::write(&temp, b"XXX").expect("a stale partial copy");
    let err = store(&root, &req, &no_progress()).expect_err("verification fails");
    assert_eq!(err.retry, Retry::Transient, "{err}");
    assert!(!temp.exists() && !root.join("sub/a.jpg").exists());
    store(&root, &req, &no_progress()).expect("copied again from zero");
    assert_eq!(fs::read(root.join("sub/a.jpg")).expect("read"), b"the real content");
}

/// A copy is checked by reading it back through its own handle on a local
/// file system, and flushed and opened again elsewhere (a network file
/// system reports failed writes on the flush): either way a copy that does
/// not hold the scanned bytes is caught, and a good one passes.
#[test]
fn both_ways_of_reading_a_copy_back_catch_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir(&root).expect("root");
    let req = request(dir.path(), "a.jpg", b"the real content");
    let temp = root.join(".a.jpg.tmp");
    for file_system in [FileSystem::taken_for_local(&root), FileSystem::unknown()] {
        fs::write(&temp, b"XXX").expect("a stale partial copy");
        let err = write_verified(&file_system, &req, &temp, &no_progress()).expect_err("caught");
        assert_eq!(err.retry, Retry::Transient, "{err}");
        assert!(!temp.exists(), "the bad copy is removed");
        write_verified(&file_system, &req, &temp, &no_progress()).expect("a good copy passes");
        assert_eq!(fs::read(&temp).expect("read"), b"the real content");
        fs::remove_file(&temp).expect("remove");
    }
}

/// Regression: a file whose name is 230–255 bytes long could never be
/// backed up: its temporary name passed `NAME_MAX`.
#[test]
fn a_255_byte_name_is_backed_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir(&root).expect("root");
    let name = format!("{}.jpg", "n".repeat(crate::destination::NAME_MAX - 4));
    let req = UploadRequest { key: RemoteKey(name.clone().into_bytes()), ..request(dir.path(), "a.jpg", b"x") };
    store(&root, &req, &no_progress()).expect("stored under its own name");
    assert_eq!(fs::read(root.join(&name)).expect("read"), b"x");
    let other = UploadRequest { key: RemoteKey(name.into_bytes()), ..request(dir.path(), "b.jpg", b"y") };
    let moved = store(&root, &other, &no_progress()).expect("stored beside it");
    assert_eq!(fs::read(root.join(moved.receipt().key.to_string())).expect("read"), b"y");
}

#[test]
fn a_cancelled_upload_stops_without_publishing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("dest");
    fs::create_dir(&root).expect("root");
    let req = request(dir.path(), "a.jpg", b"content");
    req.cancel.cancel();
    let err = store(&root, &req, &no_progress()).expect_err("cancelled");
    assert_eq!(err.retry, Retry::Interrupted);
    assert!(!root.join("sub/a.jpg").exists(), "nothing published");
}

#[test]
fn keys_cannot_escape_the_root() {
    for key in [&b"../x.jpg"[..], b"/etc/x.jpg", b"a/../../x.jpg", b""] {
        assert!(target_path(Path::new("/dest"), &RemoteKey(key.to_vec())).is_err(), "{key:?}");
    }
}
