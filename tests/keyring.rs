//! A WebDAV password kept in the system keyring: a real Secret Service
//! (gnome-keyring, unlocked with an empty password) on a private session
//! bus, and the real `wsgidav` server.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Env, stderr, wait_until, write_photo};
use crate::webdav::{DavServer, Kind, PASSWORD, dav_env};

/// A private session bus with gnome-keyring's Secret Service on it.
pub struct SessionBus {
    pub address: String,
    children: Vec<Child>,
    _home: tempfile::TempDir,
}

impl SessionBus {
    /// Starts the bus and an unlocked keyring; fails, saying what is
    /// missing, where dbus-daemon or gnome-keyring is not installed.
    pub fn start() -> SessionBus {
        for (program, package) in [("dbus-daemon", "dbus"), ("gnome-keyring-daemon", "gnome-keyring")] {
            assert!(
                Command::new(program).arg("--version").output().is_ok(),
                "this test needs {program} (Debian: apt-get install {package}; .ci/run installs it)"
            );
        }
        let home = tempfile::tempdir().expect("home");
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().expect("stdout")).read_line(&mut line).expect("bus address");
        let address = line.trim().to_owned();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_RUNTIME_DIR", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon");
        // The login keyring's password: empty, then end of input.
        keyring.stdin.take().expect("stdin").write_all(b"\n").expect("unlock");
        let bus = SessionBus { address, children: vec![daemon, keyring], _home: home };
        wait_until(Duration::from_secs(30), "the Secret Service is on the bus", || bus.has_secrets());
        bus
    }

    fn has_secrets(&self) -> bool {
        Command::new("dbus-send")
            .args([
                &format!("--bus={}", self.address),
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
    }

    /// `photosync ARGS` with this bus as the session bus.
    fn photosync<const N: usize>(&self, env: &Env, args: [&str; N]) -> Command {
        let mut command = env.command(args);
        command.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        command
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `command` with `input` on its standard input; its output.
fn with_input(mut command: Command, input: &str) -> std::process::Output {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // photosync may end (refusing, say) before it reads its input.
    match child.stdin.take().expect("stdin").write_all(input.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("input: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("output")
}

fn shown(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr(output))
}

#[test]
fn a_password_in_the_keyring_signs_in_and_is_never_shown() {
    let bus = SessionBus::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DavServer::start(Kind::Wsgidav, &dir.path().join("dav"));
    let env = dav_env(&format!("{}/photos/", server.endpoint), "");
    let config = std::fs::read_to_string(&env.config).expect("config");
    let config = config.replace("password_env = \"TEST_DAV_PASS\"", "password_keyring = \"alice@test-dav\"");
    std::fs::write(&env.config, config).expect("config");
    let photo = write_photo(&env.source.join("a.jpg"), 30_000, 1);

    let set = with_input(bus.photosync(&env, ["password", "set", "backup"]), &format!("{PASSWORD}\n"));
    assert_eq!(set.status.code(), Some(0), "{}", shown(&set));
    assert!(shown(&set).contains("account alice@test-dav"), "{}", shown(&set));

    let backup = bus.photosync(&env, ["backup", "--json"]).output().expect("backup");
    assert_eq!(backup.status.code(), Some(0), "{}", shown(&backup));
    assert_eq!(server.files()[std::path::Path::new("a.jpg")], photo);
    for output in [&set, &backup] {
        assert!(!shown(output).contains(PASSWORD), "the password was shown: {}", shown(output));
    }
    let catalog = std::fs::read(env.state.join("catalog.sqlite")).expect("catalog");
    assert!(!catalog.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "the password reached the catalog");

    // Forgotten: the next upload stops and says how to put it back.
    let forget = bus.photosync(&env, ["password", "forget", "backup"]).output().expect("forget");
    assert_eq!(forget.status.code(), Some(0), "{}", shown(&forget));
    write_photo(&env.source.join("b.jpg"), 30_000, 2);
    let backup = bus.photosync(&env, ["backup"]).output().expect("backup");
    assert_ne!(backup.status.code(), Some(0), "{}", shown(&backup));
    assert!(shown(&backup).contains("photosync password set"), "{}", shown(&backup));
}

#[test]
fn without_a_keyring_the_error_says_what_to_use_instead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DavServer::start(Kind::Wsgidav, &dir.path().join("dav"));
    let env = dav_env(&format!("{}/photos/", server.endpoint), "");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, config.replace("password_env = \"TEST_DAV_PASS\"", "password_keyring = \"alice\""))
        .expect("config");
    write_photo(&env.source.join("a.jpg"), 30_000, 1);
    let nowhere = format!("unix:path={}", dir.path().join("no-bus").display());

    let unknown = with_input(env.command(["password", "set", "nas"]), "secret\n");
    assert_eq!(unknown.status.code(), Some(2), "{}", shown(&unknown));
    assert!(shown(&unknown).contains("no destination is called nas; the config has: backup"), "{}", shown(&unknown));

    let backup = env.command(["backup"]).env("DBUS_SESSION_BUS_ADDRESS", &nowhere).output().expect("backup");
    assert_ne!(backup.status.code(), Some(0), "{}", shown(&backup));
    assert!(shown(&backup).contains("keyring is not available"), "{}", shown(&backup));
    assert!(shown(&backup).contains("password_env or password_file"), "{}", shown(&backup));

    let set = with_input(
        {
            let mut command = env.command(["password", "set", "backup"]);
            command.env("DBUS_SESSION_BUS_ADDRESS", &nowhere);
            command
        },
        "secret\n",
    );
    assert_eq!(set.status.code(), Some(1), "{}", shown(&set));
    assert!(shown(&set).contains("keyring is not available"), "{}", shown(&set));
}
