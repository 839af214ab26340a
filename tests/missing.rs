//! Missing is not deleted: a photo that is gone for a while, or a source on
//! a disk that is unmounted, loses nothing. Jobs wait with a reason, nothing
//! is cancelled while the source is away, and whatever comes back is
//! uploaded.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::harness::{Env, assert_same_tree, make_library, tree, wait_until, write_photo};

/// Regression: a queued job whose file was missing for a moment was
/// cancelled for good, and the file, back unchanged, was never backed up
/// ("Found 7 (0 new)", exit 0, the photo not at the destination).
#[test]
fn a_photo_missing_for_a_while_is_backed_up_when_it_returns() {
    let env = Env::new();
    let media = make_library(&env.source, 6, 4_000);
    fs::remove_dir(&env.dest).expect("the destination is not there yet");
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");

    let photo = env.source.join("DCIM/101CANON/IMG_0001.JPG");
    let aside = env.dir.path().join("IMG_0001.JPG");
    fs::rename(&photo, &aside).expect("move the photo out");
    fs::create_dir(&env.dest).expect("the destination appears");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["cancelled"], 1, "the photo was deleted as far as anyone can tell: {summary}");

    fs::rename(&aside, &photo).expect("move the photo back, unchanged");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_same_tree(&tree(&env.dest), &media);
}

/// A removable disk for a source: a folder on another file system
/// (`/dev/shm`), reached through a symlink at the source's path, so that
/// "unmounting" leaves what an unmounted disk leaves: nothing at the path,
/// or an empty mount point on another device.
struct Disk {
    dir: tempfile::TempDir,
    mount_point: std::path::PathBuf,
}

impl Disk {
    /// A disk mounted at the (empty) source's path.
    fn under(source: &Path) -> Disk {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir_in("/dev/shm").expect("a folder in /dev/shm (a tmpfs) for the removable disk");
        let here = fs::metadata(source).expect("source").dev();
        let there = fs::metadata(dir.path()).expect("disk").dev();
        assert_ne!(here, there, "/dev/shm must be another file system than the test folder to stand for a disk");
        fs::remove_dir(source).expect("the source folder is empty");
        let disk = Disk { dir, mount_point: source.to_owned() };
        disk.mount();
        disk
    }

    fn mount(&self) {
        if self.mount_point.is_dir() && !self.mount_point.is_symlink() {
            fs::remove_dir(&self.mount_point).expect("empty mount point");
        }
        std::os::unix::fs::symlink(self.dir.path(), &self.mount_point).expect("mount");
    }

    /// Unmounts, leaving an empty mount point or nothing.
    fn unmount(&self, leave_mount_point: bool) {
        fs::remove_file(&self.mount_point).expect("unmount");
        if leave_mount_point {
            fs::create_dir(&self.mount_point).expect("empty mount point");
        }
    }
}

/// A source whose disk is unmounted, leaving nothing at its path or an
/// empty mount point, holds its jobs with a reason and cancels nothing.
/// Once it is back, every photo is uploaded.
#[test]
fn an_unmounted_source_holds_its_jobs_and_cancels_nothing() {
    let env = Env::new();
    let disk = Disk::under(&env.source);
    let media = make_library(&env.source, 5, 3_000);
    fs::remove_dir(&env.dest).expect("the destination is not there yet");
    assert_eq!(env.backup().0, 75);
    fs::create_dir(&env.dest).expect("the destination appears");

    disk.unmount(false);
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert_eq!(summary["cancelled"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["deferrals"].to_string().contains("is missing; is its disk mounted?"), "{summary}");
    assert!(tree(&env.dest).is_empty());
    let out = env.run(["jobs"]);
    assert!(crate::harness::stdout(&out).contains("waiting for its source folder"), "{}", crate::harness::stdout(&out));

    fs::create_dir(&env.source).expect("the empty mount point is there, the disk is not");
    let (code, summary) = env.backup();
    assert_eq!(code, 75, "{summary}");
    assert_eq!(summary["cancelled"], 0, "{summary}");
    assert!(summary["deferrals"].to_string().contains("is not mounted"), "{summary}");
    assert_eq!(env.count_jobs("cancelled"), 0);
    let recorded: i64 = env.catalog().query_row("SELECT COUNT(*) FROM files", [], |r| r.get(0)).expect("files");
    assert_eq!(recorded, media.len() as i64, "nothing is forgotten while the disk is away");

    disk.mount();
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_same_tree(&tree(&env.dest), &media);
}

/// A source configured at a folder that never existed is a mistake to
/// report (exit 1), not a disk to wait for.
#[test]
fn a_source_that_never_existed_is_an_error() {
    let env = Env::new();
    fs::remove_dir(&env.source).expect("no source");
    let (code, summary) = env.backup();
    assert_eq!(code, 1, "{summary}");
    assert!(summary["failures"][0]["reason"].as_str().is_some_and(|r| r.contains("does not exist")), "{summary}");
}

/// The daemon on a source on a removable disk: while the disk is away its
/// jobs wait and `status` says why; once it is back, everything is
/// uploaded, without a restart.
#[test]
fn a_daemon_waits_for_an_unmounted_source_and_goes_on_when_it_is_back() {
    let env = Env::new();
    env.write_config("settle = \"300ms\"\n");
    let disk = Disk::under(&env.source);
    let media = make_library(&env.source, 4, 3_000);
    let daemon = env.start_daemon();
    wait_until(Duration::from_secs(30), "the library is uploaded", || {
        env.count_jobs("acknowledged") == media.len() as i64
    });
    let out = env.run(["pause"]);
    assert!(out.status.success());
    let mut more = media.clone();
    for i in 0..3 {
        let rel = Path::new("DCIM/new").join(format!("IMG_{i}.JPG"));
        more.insert(rel.clone(), write_photo(&env.source.join(&rel), 2_500, 100 + i));
    }
    wait_until(Duration::from_secs(30), "the new photos are queued", || env.count_jobs("queued") == 3);

    disk.unmount(false);
    assert!(env.run(["resume"]).status.success());
    wait_until(Duration::from_secs(30), "status says the source is away", || {
        env.status()["scheduler"]["holds"].to_string().contains("is missing; is its disk mounted?")
    });
    let status = env.status();
    assert_eq!(status["state"], "holding", "{status}");
    assert_eq!(env.count_jobs("cancelled"), 0);
    let waiting: i64 = env
        .catalog()
        .query_row("SELECT COUNT(*) FROM jobs WHERE waiting_on = 'source'", [], |r| r.get(0))
        .expect("query");
    assert_eq!(waiting, 3, "each job records what it waits for");

    disk.mount();
    daemon.wait_until(Duration::from_secs(30), "the new photos are uploaded", || {
        env.count_jobs("acknowledged") == more.len() as i64
    });
    assert_same_tree(&tree(&env.dest), &more);
    assert!(daemon.log().contains("the source is available again"), "{}", daemon.log());
    assert_eq!(env.count_jobs("cancelled"), 0);
}
