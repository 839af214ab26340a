//! A stateful fake Dropbox for the tests, run in this test process on its
//! own thread on 127.0.0.1. One base URL stands for all three of Dropbox's
//! hosts (`api.dropboxapi.com`, `content.dropboxapi.com` and the OAuth
//! endpoints), for the routes photosync uses. It follows the published API:
//!
//! - the HTTP documentation
//!   (<https://www.dropbox.com/developers/documentation/http/documentation>),
//!   "Request and response formats": RPC endpoints take their argument as a
//!   JSON body; content-upload endpoints take it in the `Dropbox-API-Arg`
//!   header with the file's bytes as an `application/octet-stream` body;
//!   content-download endpoints answer with the bytes and put the result in
//!   the `Dropbox-API-Result` header. A void union member may be sent as a
//!   bare string (`"mode": "add"`);
//! - "Encoding for JSON Arguments"
//!   (<https://www.dropbox.com/developers/reference/json-encoding>): the
//!   header must be "HTTP header safe", with 0x7F and every non-ASCII
//!   character escaped as `\uXXXX`. A raw byte at or above 0x7F is refused as
//!   undecodable JSON (400, plain text); the fake escapes its own
//!   `Dropbox-API-Result` the same way;
//! - "Errors" and the error-handling guide
//!   (<https://www.dropbox.com/developers/reference/error-handling>): 400
//!   bad input (a plain-text body), 401 `AuthError` (`invalid_access_token`,
//!   `expired_access_token`), 409 an endpoint's error as `{error_summary,
//!   error}`, 429 `RateLimitError` with `Retry-After`;
//! - the `files.stone` and `check.stone` specifications of the
//!   `dropbox/dropbox-api-spec` repository, route by route:
//!   `files/upload` (`UploadArg` → `FileMetadata`, `UploadError`: `path`
//!   is an `UploadWriteFailed` `{reason: WriteError, upload_session_id}`),
//!   `files/upload_session/start` (`UploadSessionStartArg` →
//!   `{session_id}`, `UploadSessionStartError`),
//!   `files/upload_session/append:2`, served at `append_v2`
//!   (`UploadSessionAppendArg` → `null`, `UploadSessionAppendError`),
//!   `files/upload_session/finish` (`UploadSessionFinishArg` →
//!   `FileMetadata`, `UploadSessionFinishError`: `lookup_failed` an
//!   `UploadSessionLookupError`, `path` a `WriteError` after the call's data
//!   was appended), `files/download` (`DownloadArg` → bytes,
//!   `DownloadError`), `files/get_metadata` (`GetMetadataArg` → `Metadata`,
//!   `GetMetadataError`) and `check/user` (`EchoArg` → `EchoResult`) and `users/get_current_account` (`users.stone`).
//!   Arguments are checked as Stone checks them: unknown fields, wrong
//!   types, a `client_modified` not in `%Y-%m-%dT%H:%M:%SZ` and a
//!   `content_hash` not 64 characters long are bad input. `WriteMode` follows
//!   its documented rules: a free path is written; identical content is not
//!   written again and is no conflict (unless `strict_conflict`); `add`
//!   conflicts with different content, `overwrite` replaces it, `update`
//!   replaces the given rev; `autorename` tries `name (1).ext` and on. Upload
//!   sessions are sequential, last 7 days and are consumed by `finish`;
//! - the content hash (<https://www.dropbox.com/developers/reference/content-hash>):
//!   SHA-256 over the SHA-256 digests of each 4 MiB block;
//! - the OAuth guide (<https://developers.dropbox.com/oauth-guide>) and
//!   `auth.stone`: the code flow with PKCE (S256) and no redirect URI, so
//!   Dropbox shows the user a code to paste; `POST /oauth2/token` exchanges
//!   the code (`grant_type=authorization_code`, `code_verifier`,
//!   `client_id`, no secret) for a short-lived access token and a refresh
//!   token, and a refresh token (`grant_type=refresh_token`) for a new
//!   access token; refresh tokens are not rotated. Errors are
//!   `{error, error_description}` (400 `invalid_grant`, `invalid_client`,
//!   `invalid_request`, `unsupported_grant_type`).
//!
//! Paths are case-insensitive (stored by their lowercase form, displayed as
//! first written); names Dropbox will not store (`desktop.ini`, `.DS_Store`,
//! …) are a `disallowed_name`, an empty or over-long component a
//! `malformed_path`. Scripted [`Fault`]s answer a route with a status, lose
//! the response after doing the work, or stall.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::fake_http::{self, Answer, body_of, json_answer, lock, with_type};
use crate::harness::ServerThread;

mod files;
mod oauth;
mod self_test;

/// The app key photosync's test configuration uses.
pub const CLIENT_ID: &str = "photosync-test-app";
/// The signed-in user, as the token endpoint names them.
pub const UID: &str = "12345";
pub const ACCOUNT_ID: &str = "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc";
/// The scopes granted when a sign-in asks for none.
pub const SCOPE: &str = "account_info.read files.content.read files.content.write files.metadata.read";
/// The token endpoint's path.
pub const TOKEN_ROUTE: &str = "/oauth2/token";
/// The content hash's block size.
pub const BLOCK: usize = 4 * 1024 * 1024;
/// How long an upload session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_hours(7 * 24);

/// A scripted misbehaviour for the next request whose path ends with
/// `route` (`"upload_session/append_v2"`, `"oauth2/token"`), or for any
/// `/2/` request with `"*"`. Faults wait in [`State::faults`]; each request
/// takes the first one that matches it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status instead of doing the request: 429 gets the
    /// `RateLimitError` JSON (`too_many_write_operations`), others a
    /// plain-text body; `Retry-After` is sent when given.
    Status { route: &'static str, status: u16, retry_after: Option<u64> },
    /// Do the request (store the chunk, commit the file), then close the
    /// connection without answering: a lost response.
    LoseResponse { route: &'static str },
    /// Read the body, answer nothing, and hold the connection open until
    /// the server stops: a stalled server.
    Stall { route: &'static str },
}

impl Fault {
    fn matches(&self, path: &str) -> bool {
        let (Fault::Status { route, .. } | Fault::LoseResponse { route } | Fault::Stall { route }) = self;
        if *route == "*" { path.starts_with("/2/") } else { path.ends_with(route) }
    }
}

/// One stored file.
#[derive(Debug, Clone)]
pub struct File {
    pub path_display: String,
    pub id: String,
    pub rev: String,
    pub bytes: Vec<u8>,
    pub client_modified: String,
    pub server_modified: String,
    pub content_hash: String,
}

/// An open (sequential) upload session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub bytes: Vec<u8>,
    /// No more appends: only `finish` (with an empty body) may follow.
    pub closed: bool,
    pub created_at: Instant,
}

/// A request body that reached an upload-session route
/// (`upload_session/start`, `upload_session/append_v2`,
/// `upload_session/finish`), accepted or not. (Plain `files/upload` calls
/// are in [`State::requests`] only.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The route below `/2/files/`, e.g. `upload_session/append_v2`.
    pub route: String,
    /// The session the cursor named (`None` for `start`).
    pub session: Option<String>,
    /// The offset the cursor claimed (0 for `start`).
    pub offset: u64,
    /// The bytes that arrived (for a cut-off request, those before the cut).
    pub len: u64,
    /// Whether they were appended to the session (for `finish`: before its
    /// commit, which may still fail).
    pub accepted: bool,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub issued: Instant,
    pub ttl: Duration,
    /// Expired early by [`State::expire_access_tokens`].
    pub expired: bool,
}

impl AccessToken {
    pub fn is_expired(&self) -> bool {
        self.expired || self.issued.elapsed() >= self.ttl
    }
}

/// What the user approved: a one-time code's app, PKCE challenge and scopes.
#[derive(Debug, Clone)]
pub struct Code {
    pub client_id: String,
    pub challenge: String,
    pub scope: String,
}

/// A refresh token's app and scopes.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client_id: String,
    pub scope: String,
}

/// What the fake holds and does.
#[derive(Debug)]
pub struct State {
    /// Stored files by lowercase path.
    pub files: BTreeMap<String, File>,
    /// Open upload sessions by id.
    pub sessions: BTreeMap<String, Session>,
    /// Every body that reached an upload-session route, in order.
    pub received: Vec<Received>,
    /// Files written (not counting identical content left as it was, nor
    /// [`Dropbox::put`]).
    pub writes: u64,
    /// Every raw `Dropbox-API-Arg` header (lossy UTF-8), in order.
    pub args_seen: Vec<String>,
    /// The path of every request, in order (`/2/files/upload`, `/oauth2/token`).
    pub requests: Vec<String>,
    pub faults: VecDeque<Fault>,
    /// Requests to the token endpoint.
    pub token_requests: u64,
    /// Approved, not yet exchanged codes.
    pub codes: BTreeMap<String, Code>,
    pub refresh_tokens: BTreeMap<String, Grant>,
    pub access_tokens: BTreeMap<String, AccessToken>,
    /// Seconds a new access token lasts (Dropbox: 4 hours).
    pub access_ttl: u64,
    /// The largest request body an upload route takes (Dropbox: 150 MiB).
    pub max_request: u64,
    next: u64,
}

impl Default for State {
    fn default() -> State {
        State {
            files: BTreeMap::new(),
            sessions: BTreeMap::new(),
            received: Vec::new(),
            writes: 0,
            args_seen: Vec::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            token_requests: 0,
            codes: BTreeMap::new(),
            refresh_tokens: BTreeMap::new(),
            access_tokens: BTreeMap::new(),
            access_ttl: 14_400,
            max_request: 150 * 1024 * 1024,
            next: 0,
        }
    }
}

impl State {
    /// Every open session becomes unknown (`not_found`), as 7 days on.
    pub fn expire_sessions(&mut self) {
        self.sessions.clear();
    }

    /// Every access token issued so far has expired (`expired_access_token`).
    pub fn expire_access_tokens(&mut self) {
        for token in self.access_tokens.values_mut() {
            token.expired = true;
        }
    }

    /// The user disconnected the app: refresh tokens are `invalid_grant`,
    /// access tokens `invalid_access_token`, pending codes gone.
    pub fn revoke(&mut self) {
        self.refresh_tokens.clear();
        self.access_tokens.clear();
        self.codes.clear();
    }

    /// Stores `bytes` at `path` (which must start with `/`), keeping an
    /// existing file's id and displayed path; returns the lowercase path.
    pub fn store(&mut self, path: &str, bytes: &[u8], client_modified: Option<String>) -> String {
        let lower = path.to_lowercase();
        let n = self.next_number();
        let now = now();
        let previous = self.files.remove(&lower);
        let file = File {
            path_display: previous.as_ref().map_or_else(|| path.to_owned(), |p| p.path_display.clone()),
            id: previous.map_or_else(|| format!("id:{n}"), |p| p.id),
            rev: format!("5f{n:010x}"),
            bytes: bytes.to_vec(),
            client_modified: client_modified.unwrap_or_else(|| now.clone()),
            server_modified: now,
            content_hash: content_hash(bytes),
        };
        self.files.insert(lower.clone(), file);
        lower
    }

    fn next_number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A fresh identifier: `prefix`, a counter and a hash of the clock.
    fn unique(&mut self, prefix: &str) -> String {
        let n = self.next_number();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let noise = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{n}.{nanos}")));
        format!("{prefix}{n}{}", &noise[..24])
    }

    /// Marks the body just recorded in [`State::received`] accepted.
    fn accept(&mut self) {
        if let Some(last) = self.received.last_mut() {
            last.accepted = true;
        }
    }
}

/// A running fake.
pub struct Dropbox {
    /// The base URL of all three hosts, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub state: Arc<Mutex<State>>,
    _server: ServerThread,
}

impl Dropbox {
    pub fn start() -> Dropbox {
        let state = Arc::new(Mutex::new(State::default()));
        let (server, url) = fake_http::start(&state, |state, request| async move { handle(&state, request).await });
        Dropbox { url, state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut lock(&self.state))
    }

    /// Stored files' contents by displayed path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|s| s.files.values().map(|f| (f.path_display.clone(), f.bytes.clone())).collect())
    }

    /// A file already in the account (not counted in [`State::writes`]).
    pub fn put(&self, path: &str, bytes: &[u8]) {
        assert!(path.starts_with('/'), "a Dropbox path starts with /: {path:?}");
        self.with(|s| s.store(path, bytes, None));
    }
}

/// The Dropbox content hash of `bytes`, in hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut overall = Sha256::new();
    for block in bytes.chunks(BLOCK) {
        overall.update(Sha256::digest(block));
    }
    hex(&overall.finalize())
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The time now as a `DropboxTimestamp`.
fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Records the request, then answers it, unless a fault says otherwise. An
/// `Err` makes hyper close the connection without an answer.
async fn handle(shared: &Mutex<State>, request: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let body = body_of(body).await;
    let (fault, answer) = {
        let mut state = lock(shared);
        state.requests.push(path.clone());
        if path == TOKEN_ROUTE {
            state.token_requests += 1;
        }
        let arg = parts.headers.get("dropbox-api-arg");
        if let Some(arg) = arg {
            state.args_seen.push(String::from_utf8_lossy(arg.as_bytes()).into_owned());
        }
        let cut_off = body.is_err();
        let body = body.unwrap_or_else(|partial| partial);
        if let Some(route) = path.strip_prefix("/2/files/").filter(|r| r.starts_with("upload_session/")) {
            let arg: Value = arg.and_then(|a| serde_json::from_slice(a.as_bytes()).ok()).unwrap_or_default();
            state.received.push(Received {
                route: route.to_owned(),
                session: arg["cursor"]["session_id"].as_str().map(str::to_owned),
                offset: arg["cursor"]["offset"].as_u64().unwrap_or(0),
                len: body.len() as u64,
                accepted: false,
            });
        }
        if cut_off {
            return Err(std::io::Error::other("the request's body was cut off"));
        }
        let fault = state.faults.iter().position(|f| f.matches(&path)).and_then(|i| state.faults.remove(i));
        let answer = match fault {
            Some(Fault::Status { .. } | Fault::Stall { .. }) => None,
            None | Some(Fault::LoseResponse { .. }) => {
                Some(respond(&mut state, &parts.method, &parts.headers, &path, &body))
            }
        };
        (fault, answer)
    };
    match (fault, answer) {
        (Some(Fault::Status { status, retry_after, .. }), _) => Ok(scripted(status, retry_after)),
        (Some(Fault::Stall { .. }), _) => std::future::pending().await,
        (Some(Fault::LoseResponse { .. }), _) => Err(std::io::Error::other("scripted: the response is lost")),
        (None, answer) => Ok(answer.expect("an answer")),
    }
}

fn respond(state: &mut State, method: &Method, headers: &HeaderMap, path: &str, body: &[u8]) -> Answer {
    if method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Only POST is supported here");
    }
    if path == TOKEN_ROUTE {
        return oauth::token(state, headers, body);
    }
    match path.strip_prefix("/2/") {
        Some(function) => files::call(state, headers, function, body),
        None => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// A [`Fault::Status`] answer.
fn scripted(status: u16, retry_after: Option<u64>) -> Answer {
    let status = StatusCode::from_u16(status).expect("a status code");
    let mut answer = if status == StatusCode::TOO_MANY_REQUESTS {
        let mut error = json!({"reason": {".tag": "too_many_write_operations"}});
        if let Some(seconds) = retry_after {
            error["retry_after"] = seconds.into();
        }
        json_answer(status, &json!({"error_summary": "too_many_write_operations/..", "error": error}))
    } else {
        text(status, status.canonical_reason().unwrap_or("Error"))
    };
    if let Some(seconds) = retry_after {
        answer.headers_mut().insert("retry-after", HeaderValue::from(seconds));
    }
    answer
}

fn text(status: StatusCode, body: &str) -> Answer {
    with_type(status, "text/plain; charset=utf-8", body.to_owned())
}

/// 200 with a JSON result.
fn ok(result: &Value) -> Answer {
    json_answer(StatusCode::OK, result)
}

/// 409 with an endpoint's error and its summary.
fn endpoint_error(error: &Value) -> Answer {
    json_answer(StatusCode::CONFLICT, &json!({"error_summary": summary(error), "error": error}))
}

/// An error's tags, outermost first, as Dropbox summarises them:
/// `path/conflict/file/..`. A member's value is under its own tag, or (for a
/// struct) in whichever of its fields holds a union.
fn summary(error: &Value) -> String {
    let mut tags = Vec::new();
    let mut value = error;
    while let Some(tag) = value.get(".tag").and_then(Value::as_str) {
        tags.push(tag);
        value = match value.get(tag) {
            Some(inner) if inner.is_object() => inner,
            _ => value
                .as_object()
                .and_then(|fields| fields.values().find(|v| v.get(".tag").is_some()))
                .unwrap_or(&Value::Null),
        };
    }
    format!("{}/..", tags.join("/"))
}

/// JSON made HTTP header safe: 0x7F and every non-ASCII character escaped.
fn header_safe(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() && c != '\x7f' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}
