//! The `rclone rcd` child an rclone destination talks to, over rclone's
//! remote-control API (rclone docs, "Remote controlling rclone with its
//! API": every call a JSON `POST`, errors as `{"error", "status"}`).
//!
//! From rclone 1.69 it listens on a Unix socket in photosync's private
//! (0700) runtime folder: 1.69 stopped letting socket clients past its
//! authentication, so the socket is guarded twice. Older versions listen
//! on a free loopback port. Either way every call carries HTTP Basic
//! credentials, a user and password made at each start and passed in
//! rclone's environment (`RCLONE_RC_USER`, `RCLONE_RC_PASS`), never on its
//! command line, where other users could read them. On Linux the child runs under `setpriv --pdeathsig KILL`, so
//! it dies with photosync even after a `kill -9`; otherwise it is killed
//! when the destination is dropped. A child that died is started again by
//! the next call, and the call that found it dead fails as transient.
//!
//! rclone retries a failed request once (`--low-level-retries 2`) rather
//! than its default ten times: photosync retries with its own backoff, and
//! a server that is down is then reported in seconds, not minutes.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_util::sync::CancellationToken;

use super::config::RcloneConfig;
use crate::destination::DestinationError;
use crate::destination::http::{transport, until_cancelled};

/// How long rclone may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The oldest rclone photosync works with: from 1.63 a copy cut short is
/// left under a `.partial` name, never under the photo's own.
pub const MINIMUM: Version = Version(1, 63, 0);

/// The first rclone that authenticates callers on a Unix socket too.
const SOCKET_AUTH: Version = Version(1, 69, 0);

/// The longest socket path a Unix socket address holds (macOS: 104 bytes).
const SOCKET_PATH_MAX: usize = 100;

/// Tells apart the sockets of the rclone children of one photosync.
static STARTS: AtomicU64 = AtomicU64::new(0);

/// A version of rclone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// The version `rclone version` prints on its first line
    /// (`rclone v1.75.2`, `rclone v1.60.1-DEV`).
    pub fn parse(said: &str) -> Option<Version> {
        let first = said.lines().next()?;
        let number = first.split_whitespace().find_map(|word| word.strip_prefix('v'))?;
        let mut parts = number.split(|c: char| !c.is_ascii_digit()).map(str::parse::<u32>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) => Some(Version(major, minor, patch)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The child, started on first use.
pub struct Rcd {
    program: PathBuf,
    config_file: Option<PathBuf>,
    runtime_dir: PathBuf,
    timeout: Duration,
    running: tokio::sync::Mutex<Option<Arc<Running>>>,
}

/// A started child and how to reach it.
struct Running {
    child: Mutex<tokio::process::Child>,
    client: reqwest::Client,
    base: String,
    user: String,
    password: String,
    version: Version,
    /// The Unix socket it listens on, removed when it is done with.
    socket: Option<PathBuf>,
}

impl Running {
    /// Whether the child is still there; says how it ended if not.
    fn ended(&self) -> Option<String> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(e.to_string()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.get_mut().unwrap_or_else(PoisonError::into_inner).start_kill();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// Where a child is to listen.
enum Listen {
    Socket(PathBuf),
    Loopback,
}

impl Rcd {
    /// A child for `config`'s rclone, its socket (if any) in `runtime_dir`;
    /// nothing starts until the first call.
    pub fn new(config: &RcloneConfig, runtime_dir: &Path) -> Rcd {
        Rcd {
            program: config.program.clone(),
            config_file: config.config_file.clone(),
            runtime_dir: runtime_dir.to_owned(),
            timeout: config.timeout,
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// The version of the running rclone.
    pub async fn version(&self) -> Result<Version, DestinationError> {
        Ok(self.running().await?.version)
    }

    /// Calls `method` (`operations/stat`…) with `input`; its JSON answer.
    pub async fn call(
        &self,
        cancel: &CancellationToken,
        method: &str,
        input: Value,
    ) -> Result<Value, DestinationError> {
        let running = self.running().await?;
        self.send(&running, cancel, method, &input).await
    }

    async fn send(
        &self,
        running: &Running,
        cancel: &CancellationToken,
        method: &str,
        input: &Value,
    ) -> Result<Value, DestinationError> {
        let request = running
            .client
            .post(format!("{}{method}", running.base))
            .basic_auth(&running.user, Some(&running.password))
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(input.to_string());
        let answer = until_cancelled(cancel, async {
            Ok(async {
                let response = request.send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.bytes().await?))
            }
            .await)
        })
        .await?;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let why = running.ended().map_or_else(
                    || format!("rclone did not answer {method}: {}", transport(e).message),
                    |end| format!("rclone stopped ({end}); it is started again"),
                );
                return Err(DestinationError::transient(why));
            }
        };
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
        Err(classify(&format!("rclone {method}: {message}")))
    }

    /// The running child, started (again) if need be.
    async fn running(&self) -> Result<Arc<Running>, DestinationError> {
        let mut slot = self.running.lock().await;
        if let Some(running) = slot.as_ref() {
            match running.ended() {
                None => return Ok(Arc::clone(running)),
                Some(end) => {
                    tracing::warn!(program = %self.program.display(), "rclone rcd ended ({end}); starting it again");
                }
            }
        }
        *slot = None;
        let running = Arc::new(self.start().await?);
        *slot = Some(Arc::clone(&running));
        Ok(running)
    }

    /// The version of the configured rclone (`rclone version`).
    async fn program_version(&self) -> Result<Version, DestinationError> {
        let program = self.program.display();
        let cannot_run = |why: String| {
            DestinationError::permanent(format!(
                "cannot run rclone (`{program}`): {why}; install rclone, or set `rclone = \"/path/to/rclone\"`"
            ))
        };
        let run =
            tokio::process::Command::new(&self.program).arg("version").stdin(Stdio::null()).kill_on_drop(true).output();
        let output = tokio::time::timeout(START_TIMEOUT, run)
            .await
            .map_err(|_| DestinationError::transient(format!("`{program} version` did not answer")))?
            .map_err(|e| cannot_run(e.to_string()))?;
        let said = String::from_utf8_lossy(&output.stdout);
        Version::parse(&said).ok_or_else(|| cannot_run(format!("`{program} version` said no version")))
    }

    /// Where a child of `version` listens: a fresh socket in the runtime
    /// folder where that is safe, else loopback.
    fn listen(&self, version: Version) -> Listen {
        if version < SOCKET_AUTH {
            return Listen::Loopback;
        }
        let start = STARTS.fetch_add(1, Ordering::Relaxed);
        let socket = self.runtime_dir.join(format!("rclone-{}-{start}.sock", std::process::id()));
        if socket.as_os_str().len() > SOCKET_PATH_MAX {
            return Listen::Loopback;
        }
        match crate::runtime::make_private(&self.runtime_dir) {
            Ok(()) => {
                remove_stale_sockets(&self.runtime_dir);
                Listen::Socket(socket)
            }
            Err(e) => {
                tracing::warn!("rclone listens on loopback: {e}");
                Listen::Loopback
            }
        }
    }

    async fn start(&self) -> Result<Running, DestinationError> {
        let version = self.program_version().await?;
        if version < MINIMUM {
            return Err(DestinationError::permanent(format!(
                "rclone {version} (`{}`) is too old: photosync needs rclone {MINIMUM} or later",
                self.program.display()
            )));
        }
        let no_randomness = |e: std::io::Error| DestinationError::transient(format!("no randomness: {e}"));
        let user = format!("photosync-{}", random_hex(4).map_err(no_randomness)?);
        let password = random_hex(32).map_err(no_randomness)?;
        let listen = self.listen(version);
        let address = match &listen {
            Listen::Socket(socket) => {
                let _ = std::fs::remove_file(socket);
                format!("unix://{}", socket.display())
            }
            Listen::Loopback => "127.0.0.1:0".to_owned(),
        };
        let mut command = under_death_signal(&self.program);
        command
            .args(["rcd", "--rc-addr", &address, "--rc-job-expire-duration", "24h", "--low-level-retries", "2"])
            .args(["--log-level", "NOTICE"])
            .env("RCLONE_RC_USER", &user)
            .env("RCLONE_RC_PASS", &password)
            .env_remove("RCLONE_RC_NO_AUTH")
            .env_remove("RCLONE_RC_HTPASSWD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(file) = &self.config_file {
            command.arg("--config").arg(file);
        }
        let mut child = command.spawn().map_err(|e| {
            DestinationError::permanent(format!("cannot run rclone (`{}`): {e}", self.program.display()))
        })?;
        let stderr = child.stderr.take().ok_or_else(|| DestinationError::transient("rclone has no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let listening = tokio::time::timeout(START_TIMEOUT, async {
            match &listen {
                // rclone announces a TCP address only.
                Listen::Loopback => {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(at) = line.find("Serving remote control on ") {
                            return Some(line[at + "Serving remote control on ".len()..].trim().to_owned());
                        }
                        said.push(line);
                    }
                    None
                }
                Listen::Socket(socket) => {
                    tokio::select! {
                        () = accepting(socket) => Some("http://localhost/".to_owned()),
                        () = async { while let Ok(Some(line)) = lines.next_line().await { said.push(line) } } => None,
                    }
                }
            }
        })
        .await;
        let socket = match listen {
            Listen::Socket(socket) => Some(socket),
            Listen::Loopback => None,
        };
        let Ok(Some(mut base)) = listening else {
            let _ = child.start_kill();
            if let Some(socket) = &socket {
                let _ = std::fs::remove_file(socket);
            }
            let said = said.iter().rev().take(3).rev().cloned().collect::<Vec<_>>().join("; ");
            return Err(DestinationError::transient(format!("rclone rcd did not start: {said}")));
        };
        if !base.ends_with('/') {
            base.push('/');
        }
        // What rclone says from now on goes to photosync's log.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("ERROR") {
                    tracing::warn!(target: "photosync::rclone", "{line}");
                } else {
                    tracing::debug!(target: "photosync::rclone", "{line}");
                }
            }
        });
        let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).no_proxy();
        if let Some(socket) = &socket {
            client = client.unix_socket(socket.clone());
        }
        let client =
            client.build().map_err(|e| DestinationError::permanent(format!("cannot set up an HTTP client: {e}")))?;
        let running = Running { child: Mutex::new(child), client, base, user, password, version, socket };
        tracing::info!(%version, socket = running.socket.is_some(), "rclone rcd started");
        Ok(running)
    }
}

/// Removes the sockets in `dir` of rclone children that are gone (a
/// photosync killed with `-9` leaves its child's behind).
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("rclone-") && name.ends_with(".sock")) {
            continue;
        }
        let path = entry.path();
        if std::os::unix::net::UnixStream::connect(&path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Returns once something accepts connections on `socket`.
async fn accepting(socket: &Path) {
    let mut wait = Duration::from_millis(5);
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        // rclone says nothing when it listens on a socket: look again.
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}

/// `program`, on Linux under `setpriv --pdeathsig KILL` where util-linux
/// has it, so the child cannot outlive photosync.
fn under_death_signal(program: &Path) -> tokio::process::Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if cfg!(target_os = "linux") && Path::new(SETPRIV).exists() {
        let mut command = tokio::process::Command::new(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--"]).arg(program);
        command
    } else {
        tokio::process::Command::new(program)
    }
}

/// `len` random bytes as hex.
fn random_hex(len: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::destination::http::hex(&bytes))
}

/// rclone's message as an error: what a retry cannot mend is permanent
/// (an unknown remote, a missing folder, refused credentials, a sign-in to
/// renew); the rest (rate limits, network trouble) transient.
pub fn classify(message: &str) -> DestinationError {
    const PERMANENT: &[&str] = &[
        "didn't find section in config file",
        "directory not found",
        "couldn't find method",
        "permission denied",
        "unauthorized",
        "forbidden",
        "invalid_grant",
        "couldn't fetch token",
        "token expired",
        "reconnect",
        "access denied",
        "is not a directory",
        "object not found",
    ];
    let lower = message.to_lowercase();
    if PERMANENT.iter().any(|p| lower.contains(p)) {
        DestinationError::permanent(message)
    } else {
        DestinationError::transient(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Retry;

    #[test]
    fn sockets_of_rclones_that_are_gone_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("rclone-1-0.sock");
        drop(std::os::unix::net::UnixListener::bind(&gone).expect("bind"));
        let live = dir.path().join("rclone-2-0.sock");
        let _listening = std::os::unix::net::UnixListener::bind(&live).expect("bind");
        let other = dir.path().join("photosync.sock");
        drop(std::os::unix::net::UnixListener::bind(&other).expect("bind"));
        remove_stale_sockets(dir.path());
        assert!(!gone.exists() && live.exists() && other.exists());
    }

    #[test]
    fn versions_are_read_from_what_rclone_version_prints() {
        assert_eq!(Version::parse("rclone v1.75.2\n- os/version: debian"), Some(Version(1, 75, 2)));
        assert_eq!(Version::parse("rclone v1.60.1-DEV\n"), Some(Version(1, 60, 1)));
        assert_eq!(Version::parse("rclone v1.71.0-beta.8888.abcdef"), Some(Version(1, 71, 0)));
        assert_eq!(Version::parse("not rclone"), None);
    }

    #[test]
    fn rclone_errors_are_sorted_by_whether_a_retry_helps() {
        for (message, retry) in [
            ("didn't find section in config file (\"nope\")", Retry::Permanent),
            ("directory not found", Retry::Permanent),
            (
                "couldn't fetch token: invalid_grant: maybe token expired? - try refreshing with \"rclone config reconnect gphotos:\"",
                Retry::Permanent,
            ),
            ("googleapi: Error 429: Quota exceeded", Retry::Transient),
            ("dial tcp 127.0.0.1:9: connect: connection refused", Retry::Transient),
            ("context deadline exceeded", Retry::Transient),
        ] {
            assert_eq!(classify(message).retry, retry, "{message}");
        }
    }
}
