//! Signing photosync in to a fake service, as the tests of the cloud
//! destinations do: a grant written where photosync keeps it without a
//! keyring, `photosync auth` driven line by line, and the browser's
//! request to photosync's loopback listener.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::Stdio;

use crate::harness::Env;

/// Keeps `refresh_token` as the grant of destination `name`, as a sign-in
/// where no keyring answers would (`tokens/NAME.json` beside the config).
pub fn keep_grant(env: &Env, name: &str, refresh_token: &str) {
    let grant = serde_json::json!({"refresh_token": refresh_token, "signed_in_at": "2026-12-03T10:00:00Z"});
    let tokens = env.dir.path().join("tokens");
    fs::create_dir_all(&tokens).expect("tokens folder");
    fs::write(tokens.join(format!("{name}.json")), grant.to_string()).expect("grant");
}

/// The grant file of destination `name`.
pub fn grant_file(env: &Env, name: &str) -> std::path::PathBuf {
    env.dir.path().join("tokens").join(format!("{name}.json"))
}

/// Runs `photosync auth NAME ARGS`, handing each line it prints to `user`
/// until `user` answers what to type (`Some`, possibly empty); returns
/// everything printed. It must succeed.
pub fn auth(env: &Env, name: &str, args: &[&str], mut user: impl FnMut(&str) -> Option<String>) -> String {
    let mut command = env.command(["auth", name]);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("photosync auth");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    loop {
        let mut line = String::new();
        assert!(lines.read_line(&mut line).expect("read") > 0, "it stopped before the user could act: {printed}");
        printed.push_str(&line);
        if let Some(typed) = user(&line) {
            let mut stdin = child.stdin.take().expect("stdin");
            if !typed.is_empty() {
                stdin.write_all(format!("{typed}\n").as_bytes()).expect("type");
            }
            break;
        }
    }
    lines.read_to_string(&mut printed).expect("read");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    printed
}

/// The address in a line photosync printed, if it holds one.
pub fn address(line: &str) -> Option<String> {
    line.trim().strip_prefix("http").map(|rest| format!("http{rest}"))
}

/// A GET of `url` (`http://localhost:PORT/…`), as the browser makes it;
/// the answer's text.
pub fn browser_get(url: &str) -> String {
    let rest = url.strip_prefix("http://localhost:").expect("a loopback redirect");
    let (port, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}
