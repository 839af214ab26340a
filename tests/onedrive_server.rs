//! A stateful fake OneDrive (Microsoft Graph) and Microsoft identity
//! platform for the tests, run in this test process on its own thread on
//! 127.0.0.1. One base URL stands for both hosts: Graph below `/v1.0/`
//! (`graph.microsoft.com`), the identity platform below `/{tenant}/oauth2/v2.0/`
//! (`login.microsoftonline.com`), and the upload and download addresses
//! Graph hands out below `/upload/` and `/download/`. It follows Microsoft's
//! published documents:
//!
//! - "driveItem: createUploadSession"
//!   (<https://learn.microsoft.com/graph/api/driveitem-createuploadsession>,
//!   also `docs/rest-api/api/driveitem_createuploadsession.md` in
//!   `OneDrive/onedrive-api-docs`): "Create an upload session" takes an
//!   optional `{item: driveItemUploadableProperties, deferCommit}` body
//!   (`@microsoft.graph.conflictBehavior` `fail`, the documented default,
//!   `replace` or `rename`; `description`, `fileSize`, `fileSystemInfo`,
//!   `name`, which must be the path's last name; anything else is an
//!   `invalidRequest`). "Upload bytes to the upload session": `PUT` to the
//!   `uploadUrl` with `Content-Length` and `Content-Range`, each fragment
//!   less than 60 MiB, sent in order (a fragment already received is a 416
//!   `invalidRange`; so, here, is one that leaves a gap), the same total on
//!   every request; "the size of each byte range MUST be a multiple of 320
//!   KiB" (the fake refuses any other size but the last); 202 with
//!   `nextExpectedRanges` until the last byte, then 201 Created (200 when a
//!   file was replaced) with the `driveItem`. "Remarks": a `PUT` carrying
//!   `Authorization` may get a 401 (here it always does). "Handling upload
//!   conflicts" and "Handle upload errors": a name conflict (or a full
//!   drive) is a 409 (507) at the last fragment, and the session is kept
//!   until it expires. "Cancel the upload session": `DELETE` → 204.
//!   "Resuming an in-progress upload": `GET` the `uploadUrl` → the missing
//!   ranges; a lost or broken request's bytes are ignored; "Best practices":
//!   a session that no longer exists is a 404. "Completing a file": with
//!   `deferCommit`, a zero-length `POST` to the `uploadUrl` commits;
//! - the `uploadSession` resource
//!   (<https://learn.microsoft.com/graph/api/resources/uploadsession>):
//!   `uploadUrl`, `expirationDateTime` ("each fragment uploaded during the
//!   session extends the expiration time"), `nextExpectedRanges`;
//! - "Get a `DriveItem`" (<https://learn.microsoft.com/graph/api/driveitem-get>)
//!   by path, `If-None-Match` → 304; the `driveItem`, `itemReference`
//!   (`parentReference.path`: percent-encoded, `/drive/root:/Documents`),
//!   `fileSystemInfo`, `hashes` resources of the same repository;
//! - "Addressing resources in a drive"
//!   (<https://learn.microsoft.com/onedrive/developer/rest-api/concepts/addressing-driveitems>):
//!   `/me/drive/root:/{path}:` and `/me/drive/special/approot:/{path}:`,
//!   percent-encoded paths, the reserved characters `/ \ * < > ? : |`.
//!   Names are also checked against Microsoft's "Restrictions and
//!   limitations" article for OneDrive
//!   (<https://support.microsoft.com/office/64883a5d-228e-48f5-b3d2-eb39e07630fa>):
//!   no `"`, no leading or trailing space, none of `.lock`, `CON`, `PRN`,
//!   `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, `desktop.ini`, no `_vti_`,
//!   no `~$` at the start, a decoded path under 400 characters. Paths are
//!   case-insensitive; a file keeps the path it was first written with. The
//!   app folder is `Apps/{app name}` in the drive, made on first use ("Using
//!   app folder", <https://learn.microsoft.com/graph/appfolder>);
//! - "Download the contents of a `DriveItem`"
//!   (<https://learn.microsoft.com/graph/api/driveitem-get-content>): a 302
//!   to a pre-authenticated download URL that needs no `Authorization`,
//!   which honours `Range` (206);
//! - the error format (<https://learn.microsoft.com/graph/errors>): `{"error":
//!   {code, message, innerError}}`, the codes `invalidRequest`,
//!   `itemNotFound`, `nameAlreadyExists`, `invalidRange`, `accessDenied`,
//!   `quotaLimitReached`, `activityLimitReached`, `unauthenticated`, and the
//!   detailed ones (`fragmentOverlap`, `fragmentOutOfOrder`,
//!   `fragmentLengthMismatch`, `maxFragmentLengthExceeded`, `invalidPath`,
//!   `throttledRequest`, `uploadSessionNotFound`);
//! - throttling (<https://learn.microsoft.com/graph/throttling>): 429 (and
//!   503) with `Retry-After` in seconds;
//! - the QuickXorHash
//!   (<https://learn.microsoft.com/onedrive/developer/code-snippets/quickxorhash>):
//!   see [`QuickXor`];
//! - the identity platform: the device authorization grant
//!   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code>:
//!   `/devicecode`, then polling `/token` with
//!   `urn:ietf:params:oauth:grant-type:device_code`: `authorization_pending`,
//!   `authorization_declined`, `bad_verification_code`, `expired_token`, and
//!   RFC 8628's `slow_down`, which adds 5 seconds to the interval), the
//!   authorization code flow with PKCE
//!   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow>:
//!   `/authorize` with a loopback `redirect_uri`, `code_challenge_method=S256`;
//!   `/token` with the same `redirect_uri` and the `code_verifier`; a public
//!   client sends no secret; codes last about 10 minutes; errors are
//!   `{error, error_description, error_codes, timestamp, trace_id,
//!   correlation_id}`; a refresh token only with `offline_access`), and
//!   refresh tokens
//!   (<https://learn.microsoft.com/entra/identity-platform/refresh-tokens>):
//!   "Refresh tokens replace themselves with a fresh token upon every use.
//!   The Microsoft identity platform doesn't revoke old refresh tokens"
//!   ([`State::old_refresh_tokens_valid`] can make it).
//!
//! Where the documents are silent, the fake takes the stricter reading and
//! gives the tests a switch: a second session for a path that has one is a
//! 409 `nameAlreadyExists`, as OneDrive for Business answers
//! (`OneDrive/onedrive-api-docs` issue 747; Personal hands out another:
//! [`State::one_session_per_path`]); `conflictBehavior: fail` on a taken
//! name is refused when the session is made, as users report
//! (`microsoftgraph/microsoft-graph-docs` issue 19010), as well as at the
//! last fragment ([`State::conflict_at_creation`]); a session lives an hour
//! after its last fragment ([`State::session_lifetime`]); a path's missing
//! folders are made when its file is stored; a token holding only
//! `Files.ReadWrite.AppFolder` gets a 403 `accessDenied` outside the app
//! folder; a device code's polls must come from the tenant that asked for
//! it, and `slow_down` (RFC 8628, section 3.5) comes both on request
//! ([`State::slow_downs`]) and to a poll sooner than the interval after the
//! one before; a failed redemption leaves the authorization code usable.
//!
//! Scripted [`Fault`]s answer a route with a status, lose the response after
//! doing the work, or stall.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::fake_http::lock;
use crate::harness::ServerThread;

mod graph;
mod http;
mod identity;
mod quickxor;
mod self_test;
mod upload;

use http::{Answer, Call, empty, graph_error, json_answer, with_type};
use quickxor::hex;
pub use quickxor::{QuickXor, quick_xor_hash};

/// The application (client) ID photosync's test configuration uses.
pub const CLIENT_ID: &str = "5e2d7a44-9c1b-4f0e-8a36-0d7c1f9b2e61";
/// The scopes of a sign-in made by [`OneDrive::grant`].
pub const SCOPE: &str = "Files.ReadWrite offline_access";
/// The signed-in user's drive (a personal one).
pub const DRIVE_ID: &str = "b5c0e0c2a7e9f1d3";
/// The app's name, which names its folder: `/Apps/photosync`.
pub const APP_NAME: &str = "photosync";
/// Every fragment but the last is a multiple of this (320 KiB).
pub const FRAGMENT_UNIT: u64 = 327_680;
/// How long a pre-authenticated download URL works ("a few minutes").
const DOWNLOAD_TTL: Duration = Duration::from_mins(5);

/// A scripted misbehaviour for the next request whose path ends with
/// `route` (`"createUploadSession"`, `"oauth2/v2.0/token"`, `"content"`),
/// or for any Graph request (below `/v1.0/`) with `"*"`, any request to an
/// upload URL with `"upload"`, to a download URL with `"download"`. Faults
/// wait in [`State::faults`]; each request takes the first one that
/// matches it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status instead of doing the request: 429 and 503
    /// get Graph's throttling error (`activityLimitReached`), other
    /// statuses a Graph error of their kind; on the identity platform's
    /// routes, an OAuth error (`temporarily_unavailable`). `Retry-After` is
    /// sent when given.
    Status { route: &'static str, status: u16, retry_after: Option<u64> },
    /// Do the request (take the fragment, commit the file, issue the
    /// tokens), then close the connection without answering.
    LoseResponse { route: &'static str },
    /// Read the body, answer nothing, and hold the connection open until
    /// the server stops.
    Stall { route: &'static str },
}

impl Fault {
    fn matches(&self, path: &str) -> bool {
        let (Fault::Status { route, .. } | Fault::LoseResponse { route } | Fault::Stall { route }) = self;
        match *route {
            "*" => path.starts_with("/v1.0/"),
            "upload" => path.starts_with("/upload/"),
            "download" => path.starts_with("/download/"),
            route => path.ends_with(route),
        }
    }
}

/// A file or folder in the drive.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its path from the drive's root as first written (`/Backup/a.jpg`;
    /// the app folder's files are below `/Apps/photosync`).
    pub path: String,
    pub id: String,
    pub folder: bool,
    pub bytes: Vec<u8>,
    /// The QuickXorHash, standard base64.
    pub quick_xor: String,
    /// When the service created and last changed it (RFC 3339).
    pub created: String,
    pub modified: String,
    /// What the client said (`fileSystemInfo`).
    pub fs_created: String,
    pub fs_modified: String,
    /// Bumped at every change (the `eTag`'s and `cTag`'s counter).
    pub version: u64,
}

impl Item {
    /// Its name: the path's last component.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }
}

/// What `@microsoft.graph.conflictBehavior` says to do when the name is
/// taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Fail,
    Replace,
    Rename,
}

/// An upload session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The `tempauth` its URL carries.
    pub tempauth: String,
    /// The path to write, as written in the request.
    pub path: String,
    pub conflict: Conflict,
    pub fs_created: Option<String>,
    pub fs_modified: Option<String>,
    pub defer_commit: bool,
    /// The total the first fragment declared.
    pub total: Option<u64>,
    pub bytes: Vec<u8>,
    hasher: QuickXor,
    pub expires: jiff::Timestamp,
    /// Every byte is in (a commit failed, or waits for `deferCommit`'s
    /// `POST`).
    pub complete: bool,
}

impl Session {
    fn status(&self) -> Value {
        let ranges: Vec<String> = if self.complete { Vec::new() } else { vec![format!("{}-", self.bytes.len())] };
        json!({"expirationDateTime": rfc3339(self.expires), "nextExpectedRanges": ranges})
    }
}

/// A `PUT` that reached an upload URL, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The session's id (the URL's last segment).
    pub session: String,
    /// The first byte `Content-Range` named (0 when it named none).
    pub start: u64,
    /// The bytes that arrived (for a cut-off request, those before the cut).
    pub len: u64,
    /// Whether the session took them.
    pub accepted: bool,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub issued: Instant,
    pub ttl: Duration,
    /// Expired early by [`State::expire_access_tokens`].
    pub expired: bool,
    pub scope: String,
}

impl AccessToken {
    pub fn is_expired(&self) -> bool {
        self.expired || self.issued.elapsed() >= self.ttl
    }
}

/// A refresh token's app and scopes.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client_id: String,
    pub scope: String,
}

/// An authorization code the browser brought back.
#[derive(Debug, Clone)]
pub struct Code {
    pub client_id: String,
    pub challenge: String,
    pub redirect_uri: String,
    pub scope: String,
    pub issued: Instant,
}

/// Where a device sign-in stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved,
    Declined,
}

/// A device authorization request.
#[derive(Debug, Clone)]
pub struct Device {
    pub user_code: String,
    pub client_id: String,
    pub tenant: String,
    pub scope: String,
    pub issued: Instant,
    pub expires_in: u64,
    /// Seconds between polls; grows by [`State::slow_down_increment`] at
    /// each `slow_down`.
    pub interval: u64,
    pub last_poll: Option<Instant>,
    pub status: DeviceStatus,
    /// The order of requests, to find the latest.
    pub order: u64,
}

/// What the fake holds and does.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // switches the tests flip
pub struct State {
    /// The server's base URL.
    pub base: String,
    /// Files and folders by lowercase path.
    pub items: BTreeMap<String, Item>,
    /// Upload sessions by id.
    pub sessions: BTreeMap<String, Session>,
    /// Every `PUT` to an upload URL, in order.
    pub received: Vec<Received>,
    /// `METHOD path` of every request, upload URLs shortened to `PUT
    /// upload`, `GET upload`…
    pub requests: Vec<String>,
    /// Files stored by uploads (not [`OneDrive::put`]).
    pub writes: u64,
    /// The `grant_type` of every request to the token endpoint.
    pub token_requests: Vec<String>,
    /// Requests with `grant_type=refresh_token`.
    pub refreshes: u64,
    pub faults: VecDeque<Fault>,
    /// The `interval` a device code gets (Microsoft: 5).
    pub device_interval: u64,
    /// The `expires_in` a device code gets (Microsoft: 900).
    pub device_expires_in: u64,
    /// Polls to answer `slow_down` to come what may.
    pub slow_downs: u32,
    /// Seconds each `slow_down` adds to the interval (RFC 8628: 5).
    pub slow_down_increment: u64,
    /// Whether a refresh token still works after it was used (Microsoft: it
    /// does).
    pub old_refresh_tokens_valid: bool,
    /// Seconds a new access token lasts (`expires_in`).
    pub access_ttl: u64,
    /// How long an upload session lives after its last fragment.
    pub session_lifetime: Duration,
    /// The largest fragment taken is one byte less (Graph: 60 MiB).
    pub max_fragment: u64,
    /// Leave `file.hashes` out of driveItems (work and school drives
    /// sometimes do).
    pub omit_hashes: bool,
    /// The drive's size, if it is to fill up.
    pub quota: Option<u64>,
    /// A second session for a path that has one is a 409 (OneDrive for
    /// Business does this, OneDrive Personal hands out another).
    pub one_session_per_path: bool,
    /// `conflictBehavior: fail` is checked when the session is made, not
    /// only at its last fragment.
    pub conflict_at_creation: bool,
    pub codes: BTreeMap<String, Code>,
    /// Device requests by device code.
    pub devices: BTreeMap<String, Device>,
    pub refresh_tokens: BTreeMap<String, Grant>,
    pub access_tokens: BTreeMap<String, AccessToken>,
    /// Download URL tokens: the item's lowercase path, and when issued.
    pub downloads: BTreeMap<String, (String, Instant)>,
    next: u64,
}

impl Default for State {
    fn default() -> State {
        State {
            base: String::new(),
            items: BTreeMap::new(),
            sessions: BTreeMap::new(),
            received: Vec::new(),
            requests: Vec::new(),
            writes: 0,
            token_requests: Vec::new(),
            refreshes: 0,
            faults: VecDeque::new(),
            device_interval: 5,
            device_expires_in: 900,
            slow_downs: 0,
            slow_down_increment: 5,
            old_refresh_tokens_valid: true,
            access_ttl: 3600,
            session_lifetime: Duration::from_hours(1),
            max_fragment: 60 * 1024 * 1024,
            omit_hashes: false,
            quota: None,
            one_session_per_path: true,
            conflict_at_creation: true,
            codes: BTreeMap::new(),
            devices: BTreeMap::new(),
            refresh_tokens: BTreeMap::new(),
            access_tokens: BTreeMap::new(),
            downloads: BTreeMap::new(),
            next: 0,
        }
    }
}

impl State {
    /// Every upload session is gone (404), as after its expiry.
    pub fn expire_sessions(&mut self) {
        self.sessions.clear();
    }

    /// Every access token issued so far has expired (401).
    pub fn expire_access_tokens(&mut self) {
        for token in self.access_tokens.values_mut() {
            token.expired = true;
        }
    }

    /// The user revoked the sign-in: refresh tokens are `invalid_grant`,
    /// access tokens a 401, codes not yet redeemed gone.
    pub fn revoke(&mut self) {
        self.refresh_tokens.clear();
        self.access_tokens.clear();
        self.codes.clear();
    }

    /// The bytes stored, all files together.
    pub fn used(&self) -> u64 {
        self.items.values().map(|i| i.bytes.len() as u64).sum()
    }

    /// Stores a file at `path` (from the drive's root, starting with `/`),
    /// making its missing folders and keeping an existing file's id and
    /// path; returns whether one was replaced.
    pub fn store(&mut self, path: &str, bytes: &[u8], fs_created: Option<String>, fs_modified: Option<String>) -> bool {
        self.insert_file(path, bytes.to_vec(), quick_xor_hash(bytes), fs_created, fs_modified)
    }

    /// [`State::store`] with the QuickXorHash already known.
    fn insert_file(
        &mut self,
        path: &str,
        bytes: Vec<u8>,
        quick_xor: String,
        fs_created: Option<String>,
        fs_modified: Option<String>,
    ) -> bool {
        self.make_folders(path);
        let now = rfc3339(jiff::Timestamp::now());
        let previous = self.items.remove(&path.to_lowercase());
        let replaced = previous.is_some();
        let id = previous.as_ref().map_or_else(|| self.new_id(), |p| p.id.clone());
        let item = Item {
            path: previous.as_ref().map_or_else(|| path.to_owned(), |p| p.path.clone()),
            id,
            folder: false,
            bytes,
            quick_xor,
            created: previous.as_ref().map_or_else(|| now.clone(), |p| p.created.clone()),
            modified: now.clone(),
            fs_created: fs_created
                .unwrap_or_else(|| previous.as_ref().map_or_else(|| now.clone(), |p| p.fs_created.clone())),
            fs_modified: fs_modified.unwrap_or(now),
            version: previous.map_or(1, |p| p.version + 1),
        };
        self.items.insert(path.to_lowercase(), item);
        replaced
    }

    /// Makes the folders above `path` that are missing, named as `path`
    /// names them.
    fn make_folders(&mut self, path: &str) {
        let mut end = 0;
        while let Some(slash) = path[end + 1..].find('/') {
            end += 1 + slash;
            let folder = &path[..end];
            if !self.items.contains_key(&folder.to_lowercase()) {
                let now = rfc3339(jiff::Timestamp::now());
                let item = Item {
                    path: folder.to_owned(),
                    id: self.new_id(),
                    folder: true,
                    bytes: Vec::new(),
                    quick_xor: String::new(),
                    created: now.clone(),
                    modified: now.clone(),
                    fs_created: now.clone(),
                    fs_modified: now,
                    version: 1,
                };
                self.items.insert(folder.to_lowercase(), item);
            }
        }
    }

    fn next_number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A new item id, as OneDrive Personal writes them.
    fn new_id(&mut self) -> String {
        format!("{}!{}", DRIVE_ID.to_uppercase(), 200 + self.next_number())
    }

    /// A fresh identifier: `prefix`, a counter and a hash of the clock.
    fn unique(&mut self, prefix: &str) -> String {
        let n = self.next_number();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let noise = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{n}.{nanos}")));
        format!("{prefix}{n}{}", &noise[..24])
    }

    /// Marks the `PUT` just recorded in [`State::received`] accepted.
    fn accept(&mut self) {
        if let Some(last) = self.received.last_mut() {
            last.accepted = true;
        }
    }
}

/// A running fake.
pub struct OneDrive {
    /// The base URL of both hosts, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub state: Arc<Mutex<State>>,
    _server: ServerThread,
}

impl OneDrive {
    pub fn start() -> OneDrive {
        let state = Arc::new(Mutex::new(State::default()));
        let (server, url) =
            crate::fake_http::start(&state, |state, request| async move { http::handle(&state, request).await });
        lock(&state).base.clone_from(&url);
        OneDrive { url, state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut lock(&self.state))
    }

    /// Files by path as first written, below the drive's root
    /// (`/Photos/a.jpg`); the app folder's as `approot:/Photos/a.jpg`.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let app = format!("/apps/{}/", APP_NAME.to_lowercase());
        self.with(|s| {
            s.items
                .iter()
                .filter(|(_, item)| !item.folder)
                .map(|(key, item)| {
                    let path = match key.strip_prefix(&app) {
                        Some(_) => format!("approot:/{}", &item.path[app.len()..]),
                        None => item.path.clone(),
                    };
                    (path, item.bytes.clone())
                })
                .collect()
        })
    }

    /// A file already in the drive, at `path` below its root (not counted in
    /// [`State::writes`]).
    pub fn put(&self, path: &str, bytes: &[u8]) {
        assert!(path.starts_with('/') && !path.ends_with('/'), "a path below the drive's root: {path:?}");
        self.with(|s| s.store(path, bytes, None, None));
    }
}

/// A time as Graph writes it: RFC 3339 in UTC, to the millisecond.
fn rfc3339(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A GUID-shaped string derived from `seed`.
fn guid(seed: &str) -> String {
    let h = hex(&Sha256::digest(seed));
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]).to_uppercase()
}
