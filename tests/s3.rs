//! The S3 destination against a real S3 server on 127.0.0.1: `s3s-fs`, run
//! in this test process on its own thread, behind a thin layer that records
//! every `UploadPart` it receives.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::harness::{Env, make_library, quote, stderr, tree, wait_until, write_video};

const KEY_ID: &str = "photosync-test";
const SECRET: &str = "photosync-test-secret";
const BUCKET: &str = "photos";

/// A running s3s-fs server.
struct S3Server {
    endpoint: String,
    root: PathBuf,
    /// Part numbers of every `UploadPart` request received, in order.
    parts: Arc<Mutex<Vec<u32>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    fn start(root: &Path) -> S3Server {
        fs::create_dir_all(root.join(BUCKET)).expect("bucket folder");
        let parts = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let (root_dir, seen) = (root.to_owned(), Arc::clone(&parts));
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
            runtime.block_on(serve(root_dir, seen, ready, stopped));
        });
        let addr: std::net::SocketAddr = address.recv().expect("server address");
        S3Server {
            endpoint: format!("http://{addr}"),
            root: root.to_owned(),
            parts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn parts_received(&self) -> Vec<u32> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stored objects of the bucket by key (s3s-fs keeps them as files).
    fn objects(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        tree(&self.root.join(BUCKET)).into_iter().filter(|(k, _)| !k.to_string_lossy().contains(".s3s")).collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    root: PathBuf,
    parts: Arc<Mutex<Vec<u32>>>,
    ready: std::sync::mpsc::Sender<std::net::SocketAddr>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs");
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(KEY_ID, SECRET));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    ready.send(listener.local_addr().expect("addr")).expect("send addr");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let (service, parts) = (service.clone(), Arc::clone(&parts));
                let recording = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let query = request.uri().query().unwrap_or_default();
                    if request.method() == hyper::Method::PUT && query.contains("uploadId=") {
                        let number = query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("partNumber="))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        parts.lock().unwrap_or_else(PoisonError::into_inner).push(number);
                    }
                    hyper::service::Service::call(&service, request)
                });
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(socket), recording).await;
                });
            }
            _ = &mut stopped => break,
        }
    }
}

/// An environment whose one destination is the server's bucket.
fn s3_env(server: &S3Server, extra: &str) -> Env {
    let env = Env::new();
    let state = quote(&env.state);
    let source = quote(&env.source);
    let power = quote(&env.power_supply_dir());
    let text = format!(
        "state_dir = {state}\n[retry]\nrun_delay = \"20ms\"\n\n[policy]\npower_supply_dir = {power}\n\n\
         [[source]]\npath = {source}\n\n\
         [[destination]]\nname = \"bucket\"\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\n\
         prefix = \"backup\"\npath_style = true\naccess_key_id_env = \"TEST_S3_KEY\"\n\
         secret_access_key_env = \"TEST_S3_SECRET\"\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n{extra}",
        server.endpoint
    );
    fs::write(&env.config, text).expect("config");
    env
}

fn backup(env: &Env, secret: &str) -> (i32, serde_json::Value) {
    let out = env
        .command(["backup", "--json"])
        .env("TEST_S3_KEY", KEY_ID)
        .env("TEST_S3_SECRET", secret)
        .output()
        .expect("run backup");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    (out.status.code().expect("code"), summary)
}

fn under_prefix(media: &BTreeMap<PathBuf, Vec<u8>>) -> BTreeMap<PathBuf, Vec<u8>> {
    media.iter().map(|(k, v)| (Path::new("backup").join(k), v.clone())).collect()
}

#[test]
fn small_and_multipart_uploads_arrive_intact_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let mut media = make_library(&env.source, 6, 30_000);
    let big = PathBuf::from("Videos/long.mp4");
    media.insert(big.clone(), write_video(&env.source.join(&big), 12 * 1024 * 1024 + 123, 77));

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], media.len());
    crate::harness::assert_same_tree(&server.objects(), &under_prefix(&media));
    assert_eq!(server.parts_received(), vec![1, 2, 3], "the 12 MiB file went up in three 5 MiB parts");
    let versions: i64 = env
        .catalog()
        .query_row("SELECT COUNT(*) FROM jobs WHERE receipt_version IS NOT NULL", [], |r| r.get(0))
        .expect("query");
    assert_eq!(versions, media.len() as i64, "every receipt keeps the ETag");
    let left: i64 = env.catalog().query_row("SELECT COUNT(*) FROM multipart_uploads", [], |r| r.get(0)).expect("q");
    assert_eq!(left, 0, "finished uploads leave no multipart record");

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 0);
}

#[test]
fn an_edited_photo_gets_a_new_key_and_the_old_object_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let photo = env.source.join("IMG_1.JPG");
    let original = crate::harness::write_photo(&photo, 4_000, 1);
    assert_eq!(backup(&env, SECRET).0, 0);
    let edited = crate::harness::write_photo(&photo, 4_500, 2);
    assert_eq!(backup(&env, SECRET).0, 0);
    let objects = server.objects();
    assert_eq!(objects.len(), 2, "{:?}", objects.keys());
    assert_eq!(objects[Path::new("backup/IMG_1.JPG")], original);
    assert!(objects.values().any(|v| *v == edited));
}

#[test]
fn bad_credentials_fail_permanently_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    make_library(&env.source, 2, 1_000);
    let (code, summary) = backup(&env, "wrong-secret");
    assert_eq!(code, 1, "{summary}");
    let reason = summary["failures"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("403"), "{reason}");
    assert!(server.objects().is_empty());
}

#[test]
fn a_missing_bucket_is_a_permanent_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let config = fs::read_to_string(&env.config).expect("config").replace("bucket = \"photos\"", "bucket = \"nope\"");
    fs::write(&env.config, config).expect("config");
    make_library(&env.source, 1, 1_000);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 1, "{summary}");
    assert!(summary.to_string().contains("404"), "{summary}");
}

#[test]
fn an_unreachable_server_defers_the_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    drop(server);
    make_library(&env.source, 2, 1_000);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 75, "transient: try later: {summary}");
    assert_eq!(summary["failed"], 0);
}

/// Starts `photosync backup` and kill -9s it once `parts` multipart parts
/// are recorded in the catalog (and before the upload is complete).
fn kill_backup_after_parts(env: &Env, parts: i64) {
    let stored = || -> i64 {
        rusqlite::Connection::open_with_flags(
            env.state.join("catalog.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM multipart_parts", [], |r| r.get(0)))
        .unwrap_or(0)
    };
    let mut child = env
        .command(["backup"])
        .env("TEST_S3_KEY", KEY_ID)
        .env("TEST_S3_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until(Duration::from_mins(2), "some parts are stored", || stored() >= parts);
    assert!(child.try_wait().expect("try_wait").is_none(), "still uploading when killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

#[test]
fn a_killed_multipart_upload_resumes_without_resending_stored_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let config =
        fs::read_to_string(&env.config).expect("config").replace("part_size = \"5MiB\"", "part_size = \"8MiB\"");
    fs::write(&env.config, config).expect("config");
    let big = PathBuf::from("clip.mp4");
    let content = write_video(&env.source.join(&big), 200 * 1024 * 1024, 5);
    let parts_total = content.len().div_ceil(8 * 1024 * 1024) as u32;

    kill_backup_after_parts(&env, 5);
    let recorded: Vec<u32> = env
        .catalog()
        .prepare("SELECT part_number FROM multipart_parts ORDER BY part_number")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert!(recorded.len() < parts_total as usize, "killed half-way");
    let before = server.parts_received().len();

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    let resent: Vec<u32> = server.parts_received()[before..].to_vec();
    assert!(resent.iter().all(|n| !recorded.contains(n)), "stored parts {recorded:?} were sent again: {resent:?}");
    let all: std::collections::BTreeSet<u32> = recorded.iter().chain(&resent).copied().collect();
    assert_eq!(all.len(), parts_total as usize, "every part was sent");
    assert_eq!(server.objects()[&Path::new("backup").join(&big)], content, "the object is identical");
}

#[test]
fn the_open_upload_of_a_deleted_file_is_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let big = env.source.join("gone.mp4");
    write_video(&big, 100 * 1024 * 1024, 6);
    // Another photo stays: a source that empties completely looks unmounted.
    let kept = crate::harness::write_photo(&env.source.join("kept.jpg"), 2_000, 7);
    kill_backup_after_parts(&env, 2);
    fs::remove_file(&big).expect("delete the source");

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["cancelled"], 1, "{summary}");
    let open: i64 = env.catalog().query_row("SELECT COUNT(*) FROM multipart_uploads", [], |r| r.get(0)).expect("q");
    assert_eq!(open, 0, "the abandoned upload was aborted and forgotten");
    let objects = server.objects();
    assert_eq!(objects.keys().collect::<Vec<_>>(), [Path::new("backup/kept.jpg")]);
    assert_eq!(objects[Path::new("backup/kept.jpg")], kept);
}

/// SHA-256 of `bytes`, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    sha2::Sha256::digest(bytes).iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Every acknowledged receipt names an object that holds exactly the bytes
/// whose SHA-256 the receipt records.
fn assert_receipts_hold(env: &Env, server: &S3Server) {
    let objects = server.objects();
    let conn = env.catalog();
    let mut stmt = conn
        .prepare(
            "SELECT receipt_key, receipt_sha256 FROM jobs WHERE state = 'acknowledged' AND receipt_key IS NOT NULL",
        )
        .expect("query");
    let receipts: Vec<(Vec<u8>, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("rows").map(|r| r.expect("row")).collect();
    for (key, sha) in receipts {
        let key = PathBuf::from(String::from_utf8(key).expect("utf-8 key"));
        let object = objects.get(&key).unwrap_or_else(|| panic!("{} is acknowledged but not stored", key.display()));
        assert_eq!(sha256_hex(object), sha, "{} holds other bytes than its receipt says", key.display());
    }
}

/// Regression: two sources holding the same relative path (different
/// videos above the multipart threshold) ended as one object with one
/// source's bytes, both jobs acknowledged; the other video was nowhere.
#[test]
fn two_sources_with_the_same_path_keep_both_videos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let second = dir.path().join("second-source");
    let env = s3_env(&server, &format!("\n[[source]]\npath = {}\n", quote(&second)));
    let a = write_video(&env.source.join("DCIM/clip.mp4"), 7 * 1024 * 1024, 1);
    let b = write_video(&second.join("DCIM/clip.mp4"), 7 * 1024 * 1024 + 5, 2);
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let objects = server.objects();
    assert_eq!(objects.len(), 2, "{:?}", objects.keys());
    assert!(objects.values().any(|v| *v == a) && objects.values().any(|v| *v == b), "both videos are stored");
    assert_receipts_hold(&env, &server);
}

/// Regression: a video edited in place during a multipart upload was
/// acknowledged with its scan-time SHA-256 while the object held a mix of
/// old and new bytes; the original content was nowhere. The edit here even
/// keeps the file's time, so only the bytes tell.
#[test]
fn a_video_edited_during_its_multipart_upload_is_never_acknowledged_as_the_scanned_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"8MiB\"\n")).expect("config");
    let video = env.source.join("clip.mp4");
    let original = write_video(&video, 40 * 1024 * 1024, 3);
    let mtime = fs::metadata(&video).expect("stat").modified().expect("mtime");

    let child = env
        .command(["backup", "--json"])
        .env("TEST_S3_KEY", KEY_ID)
        .env("TEST_S3_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let parts = || -> i64 {
        rusqlite::Connection::open_with_flags(
            env.state.join("catalog.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM multipart_parts", [], |r| r.get(0)))
        .unwrap_or(0)
    };
    wait_until(Duration::from_mins(1), "two parts are sent", || parts() >= 2);
    // Edit the last part, which has not been sent yet, in place.
    let mut edited = original.clone();
    let tail = original.len() - 1024 * 1024;
    edited[tail..].copy_from_slice(&crate::harness::noise(1024 * 1024, 99));
    {
        use std::os::unix::fs::FileExt as _;
        let file = fs::File::options().write(true).open(&video).expect("open");
        file.write_all_at(&edited[tail..], tail as u64).expect("edit in place");
        file.set_modified(mtime).expect("keep the time");
    }
    let out = child.wait_with_output().expect("backup ends");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(out.status.code(), Some(75), "the edited file waits for the next scan: {summary}\n{}", stderr(&out));
    assert_eq!(env.count_jobs("acknowledged"), 0, "nothing is acknowledged as the scanned version");
    assert!(server.objects().is_empty(), "no object of mixed bytes: {:?}", server.objects().keys());
    let open: i64 = env.catalog().query_row("SELECT COUNT(*) FROM multipart_uploads", [], |r| r.get(0)).expect("q");
    assert_eq!(open, 0, "the spoilt upload was aborted");

    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.objects()[Path::new("backup/clip.mp4")], edited, "the edited version is what is stored");
    assert_receipts_hold(&env, &server);
}

/// Regression: an object with the same content already at the key, written
/// by another tool (no photosync metadata), was not recognised, and a
/// second, hash-suffixed copy was stored.
#[test]
fn an_identical_object_written_by_another_tool_is_recognised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&dir.path().join("s3"));
    let env = s3_env(&server, "");
    let photo = crate::harness::write_photo(&env.source.join("IMG_1.JPG"), 30_000, 1);
    let video = write_video(&env.source.join("clip.mp4"), 6 * 1024 * 1024, 2);
    // As rclone would have left them: plain objects, no metadata of ours.
    for (name, content) in [("IMG_1.JPG", &photo), ("clip.mp4", &video)] {
        crate::harness::write(&server.root.join(BUCKET).join("backup").join(name), content);
    }
    let (code, summary) = backup(&env, SECRET);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["already_present"], 2, "{summary}");
    assert_eq!(summary["uploaded"], 0, "{summary}");
    assert_eq!(server.objects().len(), 2, "{:?}", server.objects().keys());
    assert_receipts_hold(&env, &server);
}
