//! A small stateful stand-in for a Nextcloud server, and the WebDAV
//! destination's Nextcloud features tested against it.
//!
//! It follows the Nextcloud developer manual, "Client APIs › WebDAV ›
//! Chunked file upload", section "Chunked upload v2": the user's files are
//! below `/remote.php/dav/files/USER/`, uploads below
//! `/remote.php/dav/uploads/USER/`; an upload folder is made with `MKCOL`,
//! chunks are `PUT` into it named by number (1 to 10000), every request
//! carrying a `Destination` header naming the target file (a request without
//! one is refused with 400); `MOVE` of the folder's `.file` to the target
//! assembles the chunks in number order; chunks cannot be downloaded, but
//! the folder can be listed with `PROPFIND`. Beyond the chunking document it
//! answers plain WebDAV (RFC 4918: `PROPFIND`, `MKCOL` with 409 for a
//! missing parent and 405 for an existing name, `PUT`, `GET`, `DELETE`,
//! `MOVE` honouring `Overwrite: F` with 412), keeps the `OC-Checksum` a
//! client sends with a file and reports it as `oc:checksums`, and asks for
//! Basic authentication. One request per connection. It counts the chunk
//! bytes it took, so a test can tell what was sent again.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;

use crate::harness::{tree, wait_until, write_photo, write_video};
use crate::proxy::{Head, read_head};
use crate::webdav::{PASSWORD, USER, backup, dav_env};

const FILES: &str = "/remote.php/dav/files/alice/";
const UPLOADS: &str = "/remote.php/dav/uploads/alice/";

/// The fake server.
pub struct FakeNextcloud {
    pub endpoint: String,
    root: PathBuf,
    /// Bytes of chunks taken (whole chunk requests only).
    chunk_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    address: std::net::SocketAddr,
}

struct Store {
    root: PathBuf,
    /// `OC-Checksum` kept per file path.
    checksums: Mutex<HashMap<String, String>>,
    chunk_bytes: Arc<AtomicU64>,
}

impl FakeNextcloud {
    pub fn start(root: &Path) -> FakeNextcloud {
        fs::create_dir_all(root.join("files/photos")).expect("files");
        fs::create_dir_all(root.join("uploads")).expect("uploads");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let chunk_bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let store = Arc::new(Store {
            root: root.to_owned(),
            checksums: Mutex::new(HashMap::new()),
            chunk_bytes: Arc::clone(&chunk_bytes),
        });
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let _ = store.serve(stream);
                });
            }
        });
        FakeNextcloud { endpoint: format!("http://{address}"), root: root.to_owned(), chunk_bytes, stop, address }
    }

    /// The user's files below `photos/`.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        tree(&self.root.join("files/photos"))
    }

    /// Chunk bytes taken so far.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes.load(Ordering::SeqCst)
    }

    /// Drops every upload folder, as the server does after a day of inactivity.
    pub fn expire_uploads(&self) {
        let uploads = self.root.join("uploads");
        fs::remove_dir_all(&uploads).expect("drop uploads");
        fs::create_dir(&uploads).expect("uploads");
    }

    /// Upload folders open now.
    pub fn open_uploads(&self) -> usize {
        fs::read_dir(self.root.join("uploads")).expect("uploads").count()
    }
}

impl Drop for FakeNextcloud {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.address);
    }
}

/// An answer: status and body (XML when it starts with `<`).
type Answer = (u16, Vec<u8>);

impl Store {
    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let Some(head) = read_head(&mut reader)? else { return Ok(()) };
        let mut body = vec![0u8; head.length];
        let complete = reader.read_exact(&mut body).is_ok();
        let (status, answer) = if !complete {
            return Ok(()); // cut short: nothing is kept
        } else if !Store::authorised(&head) {
            (401, Vec::new())
        } else {
            self.handle(&head, body)
        };
        let kind =
            if answer.first() == Some(&b'<') { "application/xml; charset=utf-8" } else { "application/octet-stream" };
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} Fake\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
            answer.len(),
            if status == 401 { "WWW-Authenticate: Basic realm=\"fake\"\r\n" } else { "" }
        )?;
        stream.write_all(&answer)?;
        Ok(())
    }

    fn authorised(head: &Head) -> bool {
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        head.header("authorization") == Some(&format!("Basic {expected}"))
    }

    /// The local path of a request target (files or uploads), if it is one.
    fn local(&self, target: &str) -> Option<(bool, String, PathBuf)> {
        let path = percent_encoding::percent_decode_str(target.split('?').next()?).decode_utf8_lossy().into_owned();
        let (uploads, rest) = match (path.strip_prefix(FILES), path.strip_prefix(UPLOADS)) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return None,
        };
        let rest = rest.trim_end_matches('/').to_owned();
        if rest.split('/').any(|s| s == "..") {
            return None;
        }
        let local = self.root.join(if uploads { "uploads" } else { "files" }).join(&rest);
        Some((uploads, rest, local))
    }

    fn handle(&self, head: &Head, body: Vec<u8>) -> Answer {
        let Some((uploads, rest, local)) = self.local(&head.target) else { return (404, Vec::new()) };
        let destination = head.header("destination").and_then(|d| {
            let path = d.split_once("://").map_or(d, |(_, after)| after.find('/').map_or("/", |i| &after[i..]));
            self.local(path)
        });
        if uploads && destination.is_none() {
            return (400, Vec::new()); // "Every request needs to have a Destination header"
        }
        match head.method.as_str() {
            "PROPFIND" => self.propfind(&head.target, &local, head.header("depth") == Some("1")),
            "MKCOL" if local.exists() => (405, Vec::new()),
            "MKCOL" | "PUT" if !local.parent().is_some_and(Path::is_dir) => (409, Vec::new()),
            "MKCOL" => (if fs::create_dir(&local).is_ok() { 201 } else { 500 }, Vec::new()),
            "PUT" if uploads => {
                let number = rest.rsplit('/').next().and_then(|n| n.parse::<u32>().ok());
                if !number.is_some_and(|n| (1..=10_000).contains(&n)) {
                    return (400, Vec::new());
                }
                self.chunk_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
                (if fs::write(&local, body).is_ok() { 201 } else { 500 }, Vec::new())
            }
            "PUT" => {
                let existed = local.exists();
                if fs::write(&local, body).is_err() {
                    return (500, Vec::new());
                }
                self.keep_checksum(&rest, head.header("oc-checksum"));
                (if existed { 204 } else { 201 }, Vec::new())
            }
            "GET" if uploads => (403, Vec::new()), // "Chunks cannot be downloaded"
            "GET" => fs::read(&local).map_or((404, Vec::new()), |content| (200, content)),
            "DELETE" if local.is_dir() => (if fs::remove_dir_all(&local).is_ok() { 204 } else { 500 }, Vec::new()),
            "DELETE" => (if fs::remove_file(&local).is_ok() { 204 } else { 404 }, Vec::new()),
            "MOVE" => {
                let Some((false, target_rest, target)) = destination else { return (400, Vec::new()) };
                if head.header("overwrite") == Some("F") && target.exists() {
                    return (412, Vec::new());
                }
                if !target.parent().is_some_and(Path::is_dir) {
                    return (409, Vec::new());
                }
                let existed = target.exists();
                let moved = if uploads && rest.ends_with("/.file") {
                    Store::assemble(local.parent().unwrap_or(&local), &target)
                } else {
                    fs::rename(&local, &target).is_ok()
                };
                if !moved {
                    return (500, Vec::new());
                }
                let kept = self.checksums.lock().unwrap_or_else(PoisonError::into_inner).remove(&rest);
                self.keep_checksum(&target_rest, head.header("oc-checksum").or(kept.as_deref()));
                (if existed { 204 } else { 201 }, Vec::new())
            }
            _ => (405, Vec::new()),
        }
    }

    fn keep_checksum(&self, path: &str, checksum: Option<&str>) {
        let mut checksums = self.checksums.lock().unwrap_or_else(PoisonError::into_inner);
        match checksum {
            Some(value) => checksums.insert(path.to_owned(), value.to_owned()),
            None => checksums.remove(path),
        };
    }

    /// Writes the chunks of `folder` to `target`, in number order, and drops the folder.
    fn assemble(folder: &Path, target: &Path) -> bool {
        let Ok(entries) = fs::read_dir(folder) else { return false };
        let mut chunks: Vec<(u32, PathBuf)> =
            entries.flatten().filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path()))).collect();
        chunks.sort();
        let mut content = Vec::new();
        for (_, chunk) in chunks {
            match fs::read(chunk) {
                Ok(bytes) => content.extend(bytes),
                Err(_) => return false,
            }
        }
        fs::write(target, content).is_ok() && fs::remove_dir_all(folder).is_ok()
    }

    fn propfind(&self, target: &str, local: &Path, depth_one: bool) -> Answer {
        let Ok(metadata) = fs::metadata(local) else { return (404, Vec::new()) };
        let base = target.split('?').next().unwrap_or(target).trim_end_matches('/').to_owned();
        let mut xml =
            String::from("<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\" xmlns:oc=\"http://owncloud.org/ns\">");
        xml.push_str(&self.response(&base, local, &metadata));
        if depth_one && metadata.is_dir() {
            for entry in fs::read_dir(local).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let href = format!(
                    "{base}/{}",
                    percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
                );
                if let Ok(m) = entry.metadata() {
                    xml.push_str(&self.response(&href, &entry.path(), &m));
                }
            }
        }
        xml.push_str("</d:multistatus>");
        (207, xml.into_bytes())
    }

    fn response(&self, href: &str, local: &Path, metadata: &fs::Metadata) -> String {
        let mut props = String::new();
        if metadata.is_dir() {
            props.push_str("<d:resourcetype><d:collection/></d:resourcetype>");
        } else {
            let modified = metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            let etag = format!("{:x}-{}", modified.map_or(0, |d| d.as_nanos()), metadata.len());
            let _ = write!(
                props,
                "<d:resourcetype/><d:getcontentlength>{}</d:getcontentlength><d:getetag>\"{etag}\"</d:getetag>",
                metadata.len()
            );
            let path = local.strip_prefix(self.root.join("files")).map(|p| p.to_string_lossy().into_owned());
            if let Some(sum) =
                path.ok().and_then(|p| self.checksums.lock().unwrap_or_else(PoisonError::into_inner).get(&p).cloned())
            {
                let _ = write!(props, "<oc:checksums><oc:checksum>{sum}</oc:checksum></oc:checksums>");
            }
        }
        format!(
            "<d:response><d:href>{href}</d:href><d:propstat><d:prop>{props}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        )
    }
}

/// An environment whose destination is the fake server's `photos/`.
fn nextcloud_env(server: &FakeNextcloud, extra: &str) -> crate::harness::Env {
    dav_env(
        &format!("{}{FILES}photos/", server.endpoint),
        &format!("chunked_threshold = \"6MiB\"\nchunk_size = \"5MiB\"\n{extra}"),
    )
}

#[test]
fn large_files_go_up_in_chunks_and_the_servers_checksum_proves_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeNextcloud::start(&dir.path().join("nc"));
    let env = nextcloud_env(&server, "");
    let video = write_video(&env.source.join("Videos/clip.mp4"), 14 * 1024 * 1024 + 3, 1);
    let photo = write_photo(&env.source.join("DCIM/a.jpg"), 40_000, 2);
    let (code, summary) = backup(&env, PASSWORD);
    assert_eq!(code, 0, "{summary}");
    let files = server.files();
    assert_eq!(files[Path::new("Videos/clip.mp4")], video);
    assert_eq!(files[Path::new("DCIM/a.jpg")], photo);
    assert_eq!(server.chunk_bytes(), video.len() as u64, "the video went up in chunks, the photo whole");
    assert_eq!(server.open_uploads(), 0, "the upload folder was assembled");
    let out = env.command(["verify", "--json"]).env("TEST_DAV_PASS", PASSWORD).output().expect("verify");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Kills a backup once `chunks` chunks are recorded in the catalog.
fn kill_after_chunks(env: &crate::harness::Env, chunks: i64) {
    let recorded = || -> i64 {
        rusqlite::Connection::open_with_flags(
            env.state.join("catalog.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM session_pieces", [], |r| r.get(0)))
        .unwrap_or(0)
    };
    let mut child = env
        .command(["backup"])
        .env("TEST_DAV_PASS", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until(Duration::from_mins(1), "some chunks are sent", || recorded() >= chunks);
    assert!(child.try_wait().expect("try_wait").is_none(), "still uploading when killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

#[test]
fn a_killed_chunked_upload_resumes_without_resending_confirmed_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeNextcloud::start(&dir.path().join("nc"));
    let env = nextcloud_env(&server, "");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"8MiB\"\n")).expect("config");
    let video = write_video(&env.source.join("clip.mp4"), 40 * 1024 * 1024, 3);
    kill_after_chunks(&env, 2);
    let recorded: i64 = env.catalog().query_row("SELECT COUNT(*) FROM session_pieces", [], |r| r.get(0)).expect("q");
    let before = server.chunk_bytes();

    let (code, summary) = backup(&env, PASSWORD);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.files()[Path::new("clip.mp4")], video);
    let resent = server.chunk_bytes() - before;
    assert_eq!(resent, video.len() as u64 - recorded as u64 * (5 << 20), "only the chunks not confirmed were sent");
    let left: i64 = env.catalog().query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)).expect("q");
    assert_eq!(left, 0);
}

#[test]
fn an_upload_folder_the_server_dropped_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeNextcloud::start(&dir.path().join("nc"));
    let env = nextcloud_env(&server, "");
    let config = fs::read_to_string(&env.config).expect("config");
    fs::write(&env.config, config.replace("[policy]\n", "[policy]\nbandwidth = \"8MiB\"\n")).expect("config");
    let video = write_video(&env.source.join("clip.mp4"), 30 * 1024 * 1024, 4);
    kill_after_chunks(&env, 1);
    server.expire_uploads();
    let (code, summary) = backup(&env, PASSWORD);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(server.files()[Path::new("clip.mp4")], video);
    assert_eq!(server.open_uploads(), 0);
}
