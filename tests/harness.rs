//! Test environments: a temporary source, destination and state directory,
//! a config pointing at them, synthetic media, and a way to run the real
//! binary (as another user where a test needs permissions root ignores).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_photosync");

/// The unprivileged user and group tests switch to when run as root.
pub const NOBODY: u32 = 65534;

/// One isolated photosync installation.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub source: PathBuf,
    pub dest: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// Runs the binary as `NOBODY` through setpriv when set.
    binary_as_nobody: Option<PathBuf>,
    /// The D-Bus system bus address the binary sees.
    system_bus: std::cell::RefCell<String>,
    /// Further variables the binary sees (`TZ`, say).
    vars: std::cell::RefCell<Vec<(String, String)>>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let env = Env {
            source: root.join("source"),
            dest: root.join("dest"),
            state: root.join("state"),
            config: root.join("config.toml"),
            system_bus: std::cell::RefCell::new(format!("unix:path={}", dir.path().join("no-system-bus").display())),
            dir,
            binary_as_nobody: None,
            vars: std::cell::RefCell::default(),
        };
        fs::create_dir_all(&env.source).expect("source");
        fs::create_dir_all(&env.dest).expect("dest");
        env.write_config("");
        env
    }

    /// Writes the standard config plus `extra` top-level keys. In-run retries
    /// are fast so failure tests finish quickly; power is read from this
    /// environment's own (empty: mains-powered) power-supply folder, so the
    /// machine running the tests cannot hold them back.
    /// One upload task at a time, at 16 MiB/s: small files go in batches
    /// acknowledged together, and a test that stops a run mid-way needs it
    /// still going (the next batch under way) once the first is done.
    pub fn one_slow_batch_at_a_time(&self) {
        self.slow_upload_slots(1, "16MiB");
    }

    /// `slots` upload slots (`max_concurrent`) sharing `bandwidth`.
    pub fn slow_upload_slots(&self, slots: usize, bandwidth: &str) {
        self.write_config(&format!("max_concurrent = {slots}"));
        let config = fs::read_to_string(&self.config).expect("config");
        let limited = config.replace("[policy]\n", &format!("[policy]\nbandwidth = \"{bandwidth}\"\n"));
        fs::write(&self.config, limited).expect("config");
    }

    pub fn write_config(&self, extra: &str) {
        let power = self.power_supply_dir();
        fs::create_dir_all(&power).expect("power folder");
        let text = format!(
            "state_dir = {state}\n{extra}\n[retry]\nrun_delay = \"20ms\"\n\n[policy]\npower_supply_dir = {power}\n\n\
             [[source]]\npath = {source}\n\n[[destination]]\nname = \"backup\"\ntype = \"folder\"\npath = {dest}\n",
            state = quote(&self.state),
            power = quote(&power),
            source = quote(&self.source),
            dest = quote(&self.dest),
        );
        fs::write(&self.config, text).expect("config");
    }

    /// The fake `/sys/class/power_supply` this environment's config reads.
    pub fn power_supply_dir(&self) -> PathBuf {
        self.dir.path().join("power_supply")
    }

    /// Lays out the fake power supply: on battery at `percent`, or on mains.
    pub fn set_power(&self, on_battery: bool, percent: u8) {
        let root = self.power_supply_dir();
        for (name, files) in [
            ("AC", vec![("type", "Mains".to_owned()), ("online", if on_battery { "0" } else { "1" }.to_owned())]),
            (
                "BAT0",
                vec![
                    ("type", "Battery".to_owned()),
                    ("status", if on_battery { "Discharging" } else { "Charging" }.to_owned()),
                    ("capacity", percent.to_string()),
                ],
            ),
        ] {
            fs::create_dir_all(root.join(name)).expect("supply");
            for (file, content) in files {
                fs::write(root.join(name).join(file), format!("{content}\n")).expect("supply file");
            }
        }
    }

    /// From now on, run the binary as an unprivileged user (when the tests
    /// run as root, which reads and writes whatever it likes). Returns false
    /// when that is impossible here.
    pub fn run_as_unprivileged(&mut self) -> bool {
        if !is_root() {
            return true;
        }
        if Command::new("setpriv").arg("--version").output().is_err() {
            return false;
        }
        let bin = self.dir.path().join("bin/photosync");
        fs::create_dir_all(bin.parent().expect("parent")).expect("bin dir");
        fs::copy(BIN, &bin).expect("copy binary");
        let status = Command::new("chown")
            .args(["-R", &format!("{NOBODY}:{NOBODY}")])
            .arg(self.dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
        self.binary_as_nobody = Some(bin);
        true
    }

    /// A command running photosync with this environment's config.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command_under(&[], args)
    }

    /// Like [`Env::command`], run under `wrapper` (a program and its
    /// arguments, e.g. `prlimit --nofile=1024:1024 --`).
    pub fn command_under<I, S>(&self, wrapper: &[&str], args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = match (&self.binary_as_nobody, wrapper) {
            (None, [program, rest @ ..]) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            (Some(_), [_, ..]) => panic!("a wrapper and another user do not go together"),
            (Some(bin), []) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={NOBODY}"),
                    format!("--regid={NOBODY}"),
                    "--clear-groups".into(),
                    "--".into(),
                ]);
                c.arg(bin);
                c
            }
            (None, []) => Command::new(BIN),
        };
        command
            .args(args)
            .env("PHOTOSYNC_CONFIG", &self.config)
            .env("PHOTOSYNC_RUNTIME_DIR", self.runtime_dir())
            // No system bus unless a test brings its own: the machine's battery
            // and network must not hold tests back.
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.system_bus.borrow().clone())
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .envs(self.vars.borrow().iter().map(|(k, v)| (k.clone(), v.clone())));
        command
    }

    /// Runs photosync and returns its output.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command(args).output().expect("run photosync")
    }

    /// Runs `photosync backup --json` and returns the exit code and summary.
    pub fn backup(&self) -> (i32, Value) {
        let out = self.run(["backup", "--json"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("summary is not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
        });
        let code = out.status.code().expect("exit code");
        assert_eq!(summary["exit_code"], code, "summary and exit code agree");
        (code, summary)
    }

    /// Sets a variable for every photosync this environment runs.
    pub fn set_var(&self, name: &str, value: &str) {
        self.vars.borrow_mut().push((name.to_owned(), value.to_owned()));
    }

    /// Points the binary at a (private) system bus.
    pub fn use_system_bus(&self, address: &str) {
        address.clone_into(&mut self.system_bus.borrow_mut());
    }

    /// Where this environment's daemon puts its control socket.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("photosync.sock")
    }

    /// Starts `photosync daemon` and waits until it answers on its socket.
    pub fn start_daemon(&self) -> TestDaemon {
        self.start_daemon_with(&[])
    }

    /// Starts `photosync daemon` with these environment variables set.
    pub fn start_daemon_with(&self, vars: &[(&str, &str)]) -> TestDaemon {
        self.start_daemon_under(&[], vars)
    }

    /// Starts `photosync daemon` under `wrapper` (see [`Env::command_under`]).
    pub fn start_daemon_under(&self, wrapper: &[&str], vars: &[(&str, &str)]) -> TestDaemon {
        let log = self.dir.path().join(format!("daemon-{}.log", fastrand_suffix()));
        let child = self
            .command_under(wrapper, ["daemon", "-v"])
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn daemon");
        let mut daemon = TestDaemon { child: Some(child), log };
        wait_until(Duration::from_secs(20), "the daemon answers on its socket", || {
            assert!(daemon.is_running(), "the daemon exited early:\n{}", daemon.log());
            self.run(["status"]).status.success()
        });
        daemon
    }

    /// The receipt keys of the acknowledged jobs.
    pub fn acknowledged_keys(&self) -> Vec<Vec<u8>> {
        self.catalog()
            .prepare("SELECT receipt_key FROM jobs WHERE state = 'acknowledged'")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    }

    /// Jobs in `state`, 0 while there is no catalog yet.
    pub fn count_jobs(&self, state: &str) -> i64 {
        let Ok(conn) = rusqlite::Connection::open_with_flags(
            self.state.join("catalog.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) else {
            return 0;
        };
        conn.query_row("SELECT COUNT(*) FROM jobs WHERE state = ?1", [state], |r| r.get(0)).unwrap_or(0)
    }

    /// `photosync status --json`.
    pub fn status(&self) -> Value {
        let out = self.run(["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Opens the catalog read-only.
    pub fn catalog(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.state.join("catalog.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open catalog")
    }

    /// Job count per state.
    pub fn job_states(&self) -> BTreeMap<String, i64> {
        let conn = self.catalog();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state").expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("rows").map(|r| r.expect("row")).collect()
    }
}

/// A path as a TOML string (JSON string escapes are valid TOML).
pub fn quote(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("string")
}

pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Deterministic, incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Writes a file that sniffs as a JPEG; returns its content.
pub fn write_photo(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut content = b"\xFF\xD8\xFF\xE1\x00\x10Exif\x00\x00".to_vec();
    content.extend(noise(len.saturating_sub(content.len()), seed));
    write(path, &content);
    content
}

/// Writes a file that sniffs as an MP4; returns its content.
pub fn write_video(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut content = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    content.extend(noise(len.saturating_sub(content.len()), seed));
    write(path, &content);
    content
}

pub fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

/// A small camera-roll-like library with junk mixed in. Returns the media
/// files by relative path.
pub fn make_library(root: &Path, photos: usize, photo_len: usize) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut media = BTreeMap::new();
    for i in 0..photos {
        let rel = PathBuf::from(format!("DCIM/10{}CANON/IMG_{i:04}.JPG", i % 3));
        media.insert(rel.clone(), write_photo(&root.join(&rel), photo_len + i * 97, i as u64));
    }
    let clip = PathBuf::from("Videos/clip_001.mp4");
    media.insert(clip.clone(), write_video(&root.join(&clip), photo_len * 3, 9_999));
    for (junk, content) in [
        (".DS_Store", &b"\0\0\0\x01Bud1"[..]),
        ("DCIM/Thumbs.db", b"\xD0\xCF\x11\xE0"),
        ("DCIM/100CANON/.IMG_9999.JPG.part", b"\xFF\xD8\xFF partial"),
        ("DCIM/100CANON/IMG_0001.tmp", b"\xFF\xD8\xFF"),
        ("notes.txt", b"not a photo\n"),
        ("DCIM/100CANON/fake.jpg", b"not a photo either\n"),
        (".thumbnails/t.jpg", b"\xFF\xD8\xFF hidden dir"),
    ] {
        write(&root.join(junk), content);
    }
    media
}

/// Every regular file below `root`, by relative path, with its content.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("below root").to_owned();
                out.insert(rel, fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Polls `condition` every few milliseconds until it holds; panics with
/// `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts two trees hold the same files with the same content, naming the
/// differences instead of dumping megabytes.
pub fn assert_same_tree(actual: &BTreeMap<PathBuf, Vec<u8>>, expected: &BTreeMap<PathBuf, Vec<u8>>) {
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(*k)).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).collect();
    let different: Vec<_> =
        expected.iter().filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v)).map(|(k, _)| k).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && different.is_empty(),
        "trees differ: missing {missing:?}, extra {extra:?}, different content {different:?}"
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A running `photosync daemon`, killed (-9) if the test drops it running.
pub struct TestDaemon {
    child: Option<Child>,
    log: PathBuf,
}

impl TestDaemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Like [`wait_until`], but a timeout shows the daemon's log.
    pub fn wait_until(&self, timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}; the daemon's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal by name (TERM, INT, HUP, KILL).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.pid().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for it to exit and returns its exit code (None: killed by a signal).
    pub fn wait(mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the daemon did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test server running on its own thread, with its own tokio runtime,
/// on 127.0.0.1: stopped and joined when dropped.
pub struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `serve(ready, stopped)` on a new thread: it binds, sends its
    /// address on `ready`, and serves until `stopped` fires. Returns the
    /// server and that address.
    pub fn start<F, Fut>(serve: F) -> (ServerThread, std::net::SocketAddr)
    where
        F: FnOnce(std::sync::mpsc::Sender<std::net::SocketAddr>, tokio::sync::oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
            runtime.block_on(serve(ready, stopped));
        });
        let address = address.recv().expect("server address");
        (ServerThread { stop: Some(stop), thread: Some(thread) }, address)
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
