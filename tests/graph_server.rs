//! A stateful fake of OneDrive (Microsoft Graph v1.0) and of the Microsoft
//! identity platform's token endpoints, for the tests, on 127.0.0.1. It
//! follows the published documents for what photosync uses:
//!
//! - addressing items by path
//!   (<https://learn.microsoft.com/onedrive/developer/rest-api/concepts/addressing-driveitems>):
//!   `/me/drive/root:/{path}` and the app folder
//!   `/me/drive/special/approot:/{path}` (a namespace of its own here), paths
//!   compared without regard to case, each name keeping its first spelling;
//! - get a driveItem (<https://learn.microsoft.com/graph/api/driveitem-get>):
//!   `{id, name, size, file: {mimeType, hashes: {quickXorHash}},
//!   fileSystemInfo}`; absent → 404 `itemNotFound`; `GET …:/content`
//!   (<https://learn.microsoft.com/graph/api/driveitem-get-content>) → 302
//!   to a download address that needs no token;
//! - createUploadSession
//!   (<https://learn.microsoft.com/graph/api/driveitem-createuploadsession>):
//!   `{item: {@microsoft.graph.conflictBehavior, fileSystemInfo}}` → `{uploadUrl,
//!   expirationDateTime, nextExpectedRanges: ["0-"]}`; `PUT uploadUrl` with
//!   `Content-Range: bytes a-b/total`, **without** `Authorization` (401
//!   otherwise), in order (else 416 `invalidRange`), every fragment but the
//!   last a multiple of 320 KiB and each under 60 MiB (400 otherwise), the
//!   same total every time; 202 `{nextExpectedRanges}` until the last byte,
//!   which commits: `fail` with a file at the name → 409 `nameAlreadyExists`
//!   (the session stays), else 201 with the driveItem; `GET uploadUrl` →
//!   `{nextExpectedRanges}`; `DELETE uploadUrl` → 204; an unknown session →
//!   404 `itemNotFound`;
//! - QuickXorHash (<https://learn.microsoft.com/onedrive/developer/code-snippets/quickxorhash>),
//!   standard base64 (photosync's implementation, itself checked against
//!   `rclone hashsum quickxor`); `omit_hashes` leaves it out, as work and
//!   school drives sometimes do;
//! - errors (<https://learn.microsoft.com/graph/errors>) `{"error": {code,
//!   message}}`; throttling (<https://learn.microsoft.com/graph/throttling>)
//!   429/503 with `Retry-After`; a missing or unknown token → 401
//!   `InvalidAuthenticationToken`;
//! - the device authorization grant
//!   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code>):
//!   `/{tenant}/oauth2/v2.0/devicecode` → `{device_code, user_code,
//!   verification_uri, expires_in, interval, message}`, then polls answered
//!   `authorization_pending` until approved, `slow_down` as scripted;
//! - the authorization code grant with PKCE
//!   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow>),
//!   the code handed out by [`OneDrive::approve_browser`];
//! - refresh tokens (<https://learn.microsoft.com/entra/identity-platform/refresh-tokens>):
//!   a new one at every use; the one replaced stays valid unless
//!   `old_refresh_tokens_valid` is false; a revoked grant → 400
//!   `invalid_grant` (AADSTS700082).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::dropbox_server::{Whole, body_of};
use crate::harness::ServerThread;

mod drive;

/// The application (client) id photosync's test configuration uses.
pub const CLIENT_ID: &str = "0b8c6f3e-1d2a-4c5b-9e7f-photosync00";

/// A scripted misbehaviour for the next request whose path ends with
/// `route` (`"createUploadSession"`), `"upload"` for a session's address,
/// or `"*"` for any Graph request. Each request takes the first that matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (429/503 with Graph's throttling body).
    Status { route: &'static str, status: u16, retry_after: Option<u64> },
    /// Do the request, then close the connection without answering.
    LoseResponse { route: &'static str },
    /// Read the request, answer nothing, keep the connection open.
    Stall { route: &'static str },
}

impl Fault {
    fn route(&self) -> &'static str {
        let (Fault::Status { route, .. } | Fault::LoseResponse { route } | Fault::Stall { route }) = self;
        route
    }

    fn matches(&self, path: &str) -> bool {
        match self.route() {
            "*" => path.starts_with("/v1.0/"),
            "upload" => path.starts_with("/upload/"),
            route => path.ends_with(route),
        }
    }
}

/// One stored file.
#[derive(Debug, Clone)]
pub struct File {
    pub id: String,
    /// The path as first written (`/Backup/a.jpg`, or `approot:/…`).
    pub display: String,
    pub bytes: Vec<u8>,
    pub modified: Option<String>,
}

/// An open upload session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Where it commits (key and displayed path).
    pub key: String,
    pub display: String,
    pub conflict: String,
    pub modified: Option<String>,
    pub bytes: Vec<u8>,
    pub total: Option<u64>,
}

/// A body sent to an upload session.
#[derive(Debug, Clone)]
pub struct Received {
    pub session: String,
    /// The first byte, as `Content-Range` said.
    pub start: u64,
    pub len: u64,
    pub accepted: bool,
    /// Whether it carried an `Authorization` header.
    pub authorization: bool,
}

/// A device code waiting for the user.
#[derive(Debug, Clone)]
pub struct Device {
    pub user_code: String,
    pub scope: String,
    pub approved: bool,
}

/// What the fake holds and does.
#[derive(Debug)]
pub struct State {
    /// Files by lowercase key (`root:/backup/a.jpg`).
    pub files: BTreeMap<String, File>,
    pub sessions: BTreeMap<String, Session>,
    pub received: Vec<Received>,
    /// Every request: method and path (upload addresses shortened to `upload`).
    pub requests: Vec<String>,
    /// Files actually written.
    pub writes: u64,
    pub faults: VecDeque<Fault>,
    /// The grant type of every token request.
    pub token_requests: Vec<String>,
    /// Refresh tokens and whether each still works.
    pub refresh_tokens: BTreeMap<String, bool>,
    pub access_tokens: BTreeSet<String>,
    /// Whether a refresh token replaced by a refresh still works.
    pub old_refresh_tokens_valid: bool,
    /// The polling interval the device code flow asks for, in seconds.
    pub device_interval: u64,
    /// Polls to answer `slow_down` before the others.
    pub slow_downs: u32,
    pub devices: BTreeMap<String, Device>,
    /// Authorization codes: PKCE challenge and redirect address.
    pub codes: BTreeMap<String, (String, String)>,
    /// Leave QuickXorHash out of driveItems.
    pub omit_hashes: bool,
    /// This server's address, for the upload addresses it hands out.
    pub base: String,
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            files: BTreeMap::new(),
            sessions: BTreeMap::new(),
            received: Vec::new(),
            requests: Vec::new(),
            writes: 0,
            faults: VecDeque::new(),
            token_requests: Vec::new(),
            refresh_tokens: BTreeMap::new(),
            access_tokens: BTreeSet::new(),
            old_refresh_tokens_valid: true,
            device_interval: 5,
            slow_downs: 0,
            devices: BTreeMap::new(),
            codes: BTreeMap::new(),
            omit_hashes: false,
            base: String::new(),
            next_id: 0,
        }
    }
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        let digest = Sha256::digest(format!("{prefix}{}", self.next_id).as_bytes());
        format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]))
    }

    /// Every upload session is forgotten (404), as after it expired.
    pub fn expire_sessions(&mut self) {
        self.sessions.clear();
    }

    /// Every refresh token stops working, and every access token.
    pub fn revoke(&mut self) {
        self.refresh_tokens.values_mut().for_each(|valid| *valid = false);
        self.access_tokens.clear();
    }

    /// New tokens for a grant of `scope`.
    fn tokens(&mut self, scope: &str) -> Value {
        let access = self.id("at-");
        self.access_tokens.insert(access.clone());
        let mut answer = json!({
            "token_type": "Bearer", "scope": scope, "expires_in": 3600, "ext_expires_in": 3600, "access_token": access,
        });
        if scope.split(' ').any(|s| s == "offline_access") {
            let refresh = self.id("rt-");
            self.refresh_tokens.insert(refresh.clone(), true);
            answer["refresh_token"] = refresh.into();
        }
        answer
    }
}

/// A running fake.
pub struct OneDrive {
    /// The base address of Graph (`{url}/v1.0/`) and of the identity platform.
    pub url: String,
    pub state: Arc<Mutex<State>>,
    _server: ServerThread,
}

impl OneDrive {
    pub fn start() -> OneDrive {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let (server, addr) = ServerThread::start(move |ready, stopped| serve(shared, ready, stopped));
        let url = format!("http://{addr}");
        lock(&state).base.clone_from(&url);
        OneDrive { url, state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut lock(&self.state))
    }

    /// Stored files by path as first written.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|s| s.files.values().map(|f| (f.display.clone(), f.bytes.clone())).collect())
    }

    /// A file already in the drive, below its root.
    pub fn put(&self, path: &str, bytes: &[u8]) {
        self.with(|s| drive::store(s, &format!("root:{path}"), path, bytes, None));
    }

    /// A refresh token, as if the user had signed in.
    pub fn grant(&self) -> String {
        self.with(|s| s.tokens("Files.ReadWrite offline_access")["refresh_token"].as_str().expect("refresh").to_owned())
    }

    /// What the browser does with the address photosync printed: checks it
    /// and returns the redirect (with the code and the state) it is sent to.
    pub fn approve_browser(&self, authorize_url: &str) -> String {
        let url = url::Url::parse(authorize_url).expect("an address");
        assert!(url.path().ends_with("/oauth2/v2.0/authorize"), "not the authorize endpoint: {url}");
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let get = |key: &str| query.get(key).unwrap_or_else(|| panic!("no {key} in {url}")).clone();
        assert_eq!(get("client_id"), CLIENT_ID);
        assert_eq!(get("response_type"), "code");
        assert_eq!(get("code_challenge_method"), "S256");
        assert!(get("scope").split(' ').any(|s| s == "offline_access"), "a refresh token is asked for");
        let redirect = get("redirect_uri");
        assert!(redirect.starts_with("http://localhost:"), "a loopback redirect: {redirect}");
        let code = self.with(|s| {
            let code = s.id("code-");
            s.codes.insert(code.clone(), (get("code_challenge"), redirect.clone()));
            code
        });
        format!("{redirect}?code={code}&state={}", get("state"))
    }

    /// The user enters `user_code` and allows the app.
    pub fn approve_device(&self, user_code: &str) {
        self.with(|s| {
            let device = s.devices.values_mut().find(|d| d.user_code == user_code).expect("a pending device code");
            device.approved = true;
        });
    }

    /// The user code of the latest device sign-in.
    pub fn pending_user_code(&self) -> Option<String> {
        self.with(|s| s.devices.values().find(|d| !d.approved).map(|d| d.user_code.clone()))
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(
    state: Arc<Mutex<State>>,
    ready: std::sync::mpsc::Sender<std::net::SocketAddr>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    ready.send(listener.local_addr().expect("addr")).expect("send addr");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move { handle(&state, request).await }
                });
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(socket), service).await;
                });
            }
            _ = &mut stopped => break,
        }
    }
}

/// A response.
pub type Answer = Response<Whole>;

async fn handle(shared: &Mutex<State>, request: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let body = body_of(body).await;
    let (fault, answer) = {
        let mut state = lock(shared);
        let shown = if path.starts_with("/upload/") { "upload" } else { path.as_str() };
        state.requests.push(format!("{} {shown}", parts.method));
        let Ok(body) = body else {
            return Err(std::io::Error::other("the request's body was cut off"));
        };
        let fault = state.faults.iter().position(|f| f.matches(&path)).and_then(|i| state.faults.remove(i));
        let answer = match fault {
            Some(Fault::Status { .. } | Fault::Stall { .. }) => None,
            None | Some(Fault::LoseResponse { .. }) => {
                Some(respond(&mut state, &parts.method, &parts.headers, &path, &query, &body))
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

fn respond(state: &mut State, method: &Method, headers: &HeaderMap, path: &str, query: &str, body: &[u8]) -> Answer {
    if path.ends_with("/oauth2/v2.0/devicecode") && method == Method::POST {
        return device_code(state, body);
    }
    if path.ends_with("/oauth2/v2.0/token") && method == Method::POST {
        return token(state, body);
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        return drive::upload(state, method, headers, id, query, body);
    }
    if let Some(id) = path.strip_prefix("/download/") {
        return drive::download(state, id);
    }
    if let Some(rest) = path.strip_prefix("/v1.0/") {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !token.is_some_and(|t| state.access_tokens.contains(t)) {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            );
        }
        return drive::graph(state, method, rest, body);
    }
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found.")
}

/// A form body's fields.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn device_code(state: &mut State, body: &[u8]) -> Answer {
    let form = form(body);
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return oauth_error("unauthorized_client", "AADSTS700016: Application not found in the directory.");
    }
    let device = state.id("dc-");
    let user_code = format!("PS{:06}", state.next_id);
    let scope = form.get("scope").cloned().unwrap_or_default();
    state.devices.insert(device.clone(), Device { user_code: user_code.clone(), scope, approved: false });
    let verification = "https://microsoft.com/devicelogin";
    json_answer(
        StatusCode::OK,
        &json!({
            "device_code": device, "user_code": user_code, "verification_uri": verification, "expires_in": 900,
            "interval": state.device_interval,
            "message": format!("To sign in, use a web browser to open the page {verification} and enter the code {user_code} to authenticate."),
        }),
    )
}

fn token(state: &mut State, body: &[u8]) -> Answer {
    let form = form(body);
    let get = |key: &str| form.get(key).cloned().unwrap_or_default();
    let grant = get("grant_type");
    state.token_requests.push(grant.clone());
    if get("client_id") != CLIENT_ID {
        return oauth_error("unauthorized_client", "AADSTS700016: Application not found in the directory.");
    }
    match grant.as_str() {
        "urn:ietf:params:oauth:grant-type:device_code" => {
            let Some(device) = state.devices.get(&get("device_code")).cloned() else {
                return oauth_error("expired_token", "AADSTS70019: Verification code expired.");
            };
            if state.slow_downs > 0 {
                state.slow_downs -= 1;
                return oauth_error("slow_down", "AADSTS70016: Polling too fast.");
            }
            if !device.approved {
                return oauth_error(
                    "authorization_pending",
                    "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending.",
                );
            }
            state.devices.remove(&get("device_code"));
            json_answer(StatusCode::OK, &state.tokens(&device.scope))
        }
        "authorization_code" => {
            let Some((challenge, redirect)) = state.codes.remove(&get("code")) else {
                return oauth_error("invalid_grant", "AADSTS70000: The provided authorization code is invalid.");
            };
            let proof = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(get("code_verifier").as_bytes()));
            if proof != challenge || get("redirect_uri") != redirect {
                return oauth_error("invalid_grant", "AADSTS501481: The code verifier or redirect does not match.");
            }
            json_answer(StatusCode::OK, &state.tokens("Files.ReadWrite offline_access"))
        }
        "refresh_token" => {
            let refresh = get("refresh_token");
            if state.refresh_tokens.get(&refresh) != Some(&true) {
                return oauth_error("invalid_grant", "AADSTS700082: The refresh token has expired due to inactivity.");
            }
            if !state.old_refresh_tokens_valid {
                state.refresh_tokens.insert(refresh, false);
            }
            json_answer(StatusCode::OK, &state.tokens("Files.ReadWrite offline_access"))
        }
        _ => oauth_error("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."),
    }
}

fn oauth_error(error: &str, description: &str) -> Answer {
    json_answer(StatusCode::BAD_REQUEST, &json!({"error": error, "error_description": description}))
}

fn scripted(status: u16, retry_after: Option<u64>) -> Answer {
    let status = StatusCode::from_u16(status).expect("a status code");
    let mut answer = if matches!(status.as_u16(), 429 | 503) {
        json_answer(
            status,
            &json!({"error": {"code": "activityLimitReached", "message": "The request has been throttled",
                              "innerError": {"code": "throttledRequest"}}}),
        )
    } else {
        graph_error(status, "generalException", "An unspecified error has occurred.")
    };
    if let Some(seconds) = retry_after {
        answer.headers_mut().insert("retry-after", HeaderValue::from(seconds));
    }
    answer
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    let mut answer = Response::new(Whole::new(body.to_string()));
    *answer.status_mut() = status;
    answer.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Answer {
    json_answer(status, &json!({"error": {"code": code, "message": message}}))
}
