//! The service files in systemd/ and launchd/ are valid and start the daemon.

use std::process::Command;

use crate::harness::stderr;

#[cfg(target_os = "linux")]
const UNIT: &str = include_str!("../systemd/photosync.service");
const PLIST: &str = "launchd/com.photosync.daemon.plist";

#[cfg(target_os = "linux")]
#[test]
fn systemd_unit_is_a_notify_service_running_the_daemon() {
    assert!(UNIT.lines().any(|l| l == "Type=notify"), "the daemon sends READY=1");
    assert!(UNIT.lines().any(|l| l.starts_with("ExecStart=") && l.ends_with("photosync daemon")));
    assert!(UNIT.lines().any(|l| l == "ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(
        Command::new("systemd-analyze").arg("--version").output().is_ok(),
        "this test needs systemd-analyze (apt-get install systemd)"
    );
    // Verify against the binary under test, which exists, instead of ~/.cargo/bin.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("photosync.service");
    let text: Vec<String> = UNIT
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") { format!("ExecStart={} daemon", crate::harness::BIN) } else { l.to_owned() }
        })
        .collect();
    std::fs::write(&unit, text.join("\n")).expect("write unit");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze");
    assert!(out.status.success(), "systemd-analyze verify: {}", stderr(&out));
}

#[test]
fn launchd_plist_parses_and_runs_the_daemon() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PLIST);
    let check = r#"
import plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
assert p["Label"] == "com.photosync.daemon", p
assert p["ProgramArguments"][1:] == ["daemon"], p
assert p["KeepAlive"] == {"SuccessfulExit": False}, p
assert p["StandardErrorPath"] == "/Users/YOU/Library/Logs/photosync/photosync.log", p
print("ok")
"#;
    let out = Command::new("python3").args(["-c", check]).arg(&path).output().expect("this test needs python3");
    assert!(out.status.success(), "plist check: {}", stderr(&out));
}
