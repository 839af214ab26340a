//! `photosync backup` on healthy input: first run, no-op rerun, edits,
//! duplicates, deletions.

use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Env, assert_same_tree, make_library, tree, wait_until, write_photo};

#[test]
fn first_backup_copies_every_photo_and_video_and_skips_junk() {
    let env = Env::new();
    let media = make_library(&env.source, 24, 40_000);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["discovered"], media.len());
    assert_eq!(summary["new"], media.len());
    assert_eq!(summary["uploaded"], media.len());
    assert_eq!(summary["failed"], 0);
    let bytes: usize = media.values().map(Vec::len).sum();
    assert_eq!(summary["bytes_uploaded"], bytes);
    assert_same_tree(&tree(&env.dest), &media);
    let states = env.job_states();
    assert_eq!(states.get("acknowledged").copied(), Some(media.len() as i64), "{states:?}");
    assert_eq!(states.len(), 1, "{states:?}");
}

#[test]
fn second_run_reads_nothing_uploads_nothing_and_exits_0() {
    let env = Env::new();
    let media = make_library(&env.source, 10, 10_000);
    assert_eq!(env.backup().0, 0);
    let before: Vec<_> = fs::read_dir(env.dest.join("DCIM/100CANON"))
        .expect("ls")
        .map(|e| e.expect("entry").metadata().expect("stat").modified().expect("mtime"))
        .collect();
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["discovered"], media.len());
    assert_eq!(summary["new"], 0);
    assert_eq!(summary["uploaded"], 0);
    assert_eq!(summary["already_present"], 0);
    let after: Vec<_> = fs::read_dir(env.dest.join("DCIM/100CANON"))
        .expect("ls")
        .map(|e| e.expect("entry").metadata().expect("stat").modified().expect("mtime"))
        .collect();
    assert_eq!(before, after, "destination untouched");
}

#[test]
fn copies_keep_the_source_modification_time() {
    let env = Env::new();
    let photo = env.source.join("a.jpg");
    write_photo(&photo, 5_000, 1);
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options().write(true).open(&photo).expect("open").set_modified(old).expect("set mtime");
    assert_eq!(env.backup().0, 0);
    assert_eq!(fs::metadata(env.dest.join("a.jpg")).expect("stat").modified().expect("mtime"), old);
}

#[test]
fn edited_file_is_uploaded_as_a_new_version_beside_the_old_one() {
    let env = Env::new();
    let photo = env.source.join("2024/IMG_1.JPG");
    let original = write_photo(&photo, 8_000, 1);
    assert_eq!(env.backup().0, 0);
    let edited = write_photo(&photo, 9_000, 2);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["new"], 1);
    assert_eq!(summary["uploaded"], 1);
    let dest = tree(&env.dest);
    assert_eq!(dest.len(), 2, "{:?}", dest.keys());
    assert_eq!(dest[&PathBuf::from("2024/IMG_1.JPG")], original, "old version never overwritten");
    let (new_name, new_content) = dest.iter().find(|(k, _)| k.as_path() != "2024/IMG_1.JPG").expect("new version");
    assert_eq!(new_content, &edited);
    let name = new_name.to_string_lossy();
    assert!(name.starts_with("2024/IMG_1-") && name.ends_with(".JPG"), "{name}");
}

#[test]
fn identical_content_at_two_paths_is_stored_once() {
    let env = Env::new();
    let content = write_photo(&env.source.join("camera/IMG_7.JPG"), 20_000, 7);
    fs::create_dir_all(env.source.join("copies")).expect("mkdir");
    fs::write(env.source.join("copies/IMG_7 copy.JPG"), &content).expect("copy");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["discovered"], 2);
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(summary["already_present"], 1, "{summary}");
    assert_eq!(tree(&env.dest).len(), 1);
    let keys = env.acknowledged_keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "both jobs point at the one stored copy");
}

#[test]
fn content_already_at_the_destination_is_recognised_not_copied_again() {
    let env = Env::new();
    let media = make_library(&env.source, 6, 5_000);
    for (rel, content) in &media {
        crate::harness::write(&env.dest.join(rel), content);
    }
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 0);
    assert_eq!(summary["already_present"], media.len());
    assert_same_tree(&tree(&env.dest), &media);
}

#[test]
fn a_different_file_at_the_target_name_is_never_overwritten() {
    let env = Env::new();
    let ours = write_photo(&env.source.join("IMG_1.JPG"), 3_000, 1);
    let theirs = write_photo(&env.dest.join("IMG_1.JPG"), 3_000, 2);
    assert_eq!(env.backup().0, 0);
    let dest = tree(&env.dest);
    assert_eq!(dest[&PathBuf::from("IMG_1.JPG")], theirs);
    assert!(dest.iter().any(|(k, v)| k.as_path() != "IMG_1.JPG" && *v == ours), "{:?}", dest.keys());
}

#[test]
fn include_and_exclude_rules_limit_what_is_backed_up() {
    let env = Env::new();
    write_photo(&env.source.join("keep/a.jpg"), 1_000, 1);
    write_photo(&env.source.join("Screenshots/b.jpg"), 1_000, 2);
    let config = fs::read_to_string(&env.config).expect("config");
    let config = config.replace("[[destination]]", "exclude = [\"Screenshots/**\"]\n\n[[destination]]");
    fs::write(&env.config, config).expect("write config");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(tree(&env.dest).keys().collect::<Vec<_>>(), vec![&PathBuf::from("keep/a.jpg")]);
}

#[test]
fn symlink_loops_are_not_followed_forever() {
    let env = Env::new();
    write_photo(&env.source.join("a/b.jpg"), 1_000, 1);
    std::os::unix::fs::symlink(&env.source, env.source.join("a/loop")).expect("symlink");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 1);
}

#[test]
fn a_file_deleted_after_its_upload_keeps_its_backup() {
    let env = Env::new();
    write_photo(&env.source.join("a.jpg"), 1_000, 1);
    assert_eq!(env.backup().0, 0);
    fs::remove_file(env.source.join("a.jpg")).expect("rm");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert!(env.dest.join("a.jpg").exists(), "a backup is not a mirror");
}

/// Regression: a file whose name is 230–255 bytes long could never be
/// backed up (its temporary name passed `NAME_MAX`: "File name too long").
#[test]
fn a_file_with_a_255_byte_name_is_backed_up() {
    let env = Env::new();
    let name = format!("{}.JPG", "n".repeat(251));
    let content = write_photo(&env.source.join(&name), 5_000, 1);
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(fs::read(env.dest.join(&name)).expect("copied"), content);
}

/// Regression: an upload slot ran one batch of small files to a folder
/// at a time, and a batch spends most of its time waiting for the disk to
/// make it durable: a first backup of 100,000 small photos left the
/// processor idle a third of the time. A slot now runs several batches.
#[test]
fn an_upload_slot_runs_several_batches_of_small_files_at_once() {
    let env = Env::new();
    env.slow_upload_slots(2, "8MiB");
    let media = make_library(&env.source, 800, 2_000);
    let mut child = env.command(["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    // A batch holds at most 256 files: two batches at most 512.
    wait_until(Duration::from_mins(1), "more than two batches are under way", || env.count_jobs("running") > 512);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert_same_tree(&tree(&env.dest), &media);
}
