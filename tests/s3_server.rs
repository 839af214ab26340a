//! A real S3 server for the tests: `s3s-fs`, run in this test process on
//! its own thread on 127.0.0.1, behind a thin layer that records every
//! `UploadPart` it receives; and the environments and checks the S3 tests
//! share.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::harness::{Env, ServerThread, quote, stderr, tree, wait_until};

pub const KEY_ID: &str = "photosync-test";
pub const SECRET: &str = "photosync-test-secret";
pub const BUCKET: &str = "photos";

/// A running s3s-fs server.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    /// Part numbers of every `UploadPart` request received, in order.
    parts: Arc<Mutex<Vec<u32>>>,
    _server: ServerThread,
}

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        fs::create_dir_all(root.join(BUCKET)).expect("bucket folder");
        let parts = Arc::new(Mutex::new(Vec::new()));
        let (root_dir, seen) = (root.to_owned(), Arc::clone(&parts));
        let (server, addr) = ServerThread::start(move |ready, stopped| serve(root_dir, seen, ready, stopped));
        S3Server { endpoint: format!("http://{addr}"), root: root.to_owned(), parts, _server: server }
    }

    pub fn parts_received(&self) -> Vec<u32> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stored objects of the bucket by key (s3s-fs keeps them as files).
    pub fn objects(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        tree(&self.root.join(BUCKET)).into_iter().filter(|(k, _)| !k.to_string_lossy().contains(".s3s")).collect()
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
pub fn s3_env(server: &S3Server, extra: &str) -> Env {
    s3_env_at(&server.endpoint, extra)
}

/// An environment whose one destination is the bucket at `endpoint` (the
/// server, or a proxy in front of it).
pub fn s3_env_at(endpoint: &str, extra: &str) -> Env {
    let env = Env::new();
    let state = quote(&env.state);
    let source = quote(&env.source);
    let power = quote(&env.power_supply_dir());
    let text = format!(
        "state_dir = {state}\n[retry]\nrun_delay = \"20ms\"\n\n[policy]\npower_supply_dir = {power}\n\n\
         [[source]]\npath = {source}\n\n\
         [[destination]]\nname = \"bucket\"\ntype = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{BUCKET}\"\n\
         prefix = \"backup\"\npath_style = true\naccess_key_id_env = \"TEST_S3_KEY\"\n\
         secret_access_key_env = \"TEST_S3_SECRET\"\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n{extra}"
    );
    fs::write(&env.config, text).expect("config");
    env
}

pub fn backup(env: &Env, secret: &str) -> (i32, serde_json::Value) {
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

pub fn under_prefix(media: &BTreeMap<PathBuf, Vec<u8>>) -> BTreeMap<PathBuf, Vec<u8>> {
    media.iter().map(|(k, v)| (Path::new("backup").join(k), v.clone())).collect()
}

/// Multipart parts recorded in the catalog so far (0 while there is none).
pub fn parts_recorded(env: &Env) -> i64 {
    rusqlite::Connection::open_with_flags(env.state.join("catalog.sqlite"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM session_pieces", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// `photosync backup` started in the background with the test keys.
pub fn spawn_backup(env: &Env, args: &[&str]) -> std::process::Child {
    env.command(args)
        .env("TEST_S3_KEY", KEY_ID)
        .env("TEST_S3_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Starts `photosync backup` and kill -9s it once `parts` multipart parts
/// are recorded in the catalog (and before the upload is complete).
pub fn kill_backup_after_parts(env: &Env, parts: i64) {
    let mut child = spawn_backup(env, &["backup"]);
    wait_until(Duration::from_mins(2), "some parts are stored", || parts_recorded(env) >= parts);
    assert!(child.try_wait().expect("try_wait").is_none(), "still uploading when killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    sha2::Sha256::digest(bytes).iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Every acknowledged receipt names an object that holds exactly the bytes
/// whose SHA-256 the receipt records.
pub fn assert_receipts_hold(env: &Env, server: &S3Server) {
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
