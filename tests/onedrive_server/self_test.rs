//! The fake's own tests: the QuickXorHash against Microsoft's example and
//! rclone, the sign-ins, and the upload sessions over real HTTP.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{CLIENT_ID, FRAGMENT_UNIT, Fault, Grant, OneDrive, QuickXor, SCOPE, State, hex, quick_xor_hash};

const UNIT: usize = FRAGMENT_UNIT as usize;
const PATIENCE: Duration = Duration::from_secs(10);
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// An answer.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The Graph error code and the detailed one.
    fn graph_error(&self) -> (u16, String, String) {
        let error = &self.json()["error"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (self.status, text(&error["code"]), text(&error["innerError"]["code"]))
    }

    /// The OAuth error and its first AADSTS code.
    fn oauth_error(&self) -> (u16, String, u64) {
        let body = self.json();
        (
            self.status,
            body["error"].as_str().unwrap_or_default().to_owned(),
            body["error_codes"][0].as_u64().unwrap_or(0),
        )
    }
}

/// Sends a request (redirects not followed) and waits for the answer or the
/// transport error.
fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, reqwest::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = client.request(method, url).timeout(timeout);
        if !body.is_empty() {
            request = request.body(body.to_vec());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Ok(Reply { status, headers, body: response.bytes().await?.to_vec() })
    })
}

/// A form POST to `/{tenant}/oauth2/v2.0/{route}`.
fn identity(od: &OneDrive, tenant: &str, route: &str, form: &[(&str, &str)]) -> Reply {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let url = format!("{}/{tenant}/oauth2/v2.0/{route}", od.url);
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    send("POST", &url, &headers, body.as_bytes(), PATIENCE).expect("an answer")
}

fn refresh(od: &OneDrive, refresh_token: &str) -> Reply {
    let form = [("grant_type", "refresh_token"), ("client_id", CLIENT_ID), ("refresh_token", refresh_token)];
    identity(od, "common", "token", &form)
}

/// An access token got from a refresh token for `scope`.
fn access_token_for(od: &OneDrive, scope: &str) -> String {
    let refresh_token = format!("rt-{scope}");
    od.with(|s| {
        let grant = Grant { client_id: CLIENT_ID.into(), scope: scope.into() };
        s.refresh_tokens.insert(refresh_token.clone(), grant);
    });
    refresh(od, &refresh_token).json()["access_token"].as_str().expect("access_token").to_owned()
}

fn access_token(od: &OneDrive) -> String {
    access_token_for(od, SCOPE)
}

/// A Graph request to `/v1.0/{path}`.
fn graph(od: &OneDrive, method: &str, token: &str, path: &str, body: &[u8]) -> Reply {
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    send(method, &format!("{}/v1.0/{path}", od.url), &headers, body, PATIENCE).expect("an answer")
}

/// `createUploadSession` for `path` (percent-encoded, below the root).
fn create(od: &OneDrive, token: &str, path: &str, body: &Value) -> Reply {
    let path = format!("me/drive/root:{path}:/createUploadSession");
    graph(od, "POST", token, &path, body.to_string().as_bytes())
}

/// The upload URL of a session made for `path` that fails on a conflict.
fn session(od: &OneDrive, token: &str, path: &str) -> String {
    let created = create(od, token, path, &json!({"item": {"@microsoft.graph.conflictBehavior": "fail"}}));
    assert_eq!(created.status, 200, "{}", created.text());
    created.json()["uploadUrl"].as_str().expect("uploadUrl").to_owned()
}

/// A fragment of `total` bytes starting at `start`, without a token.
fn put(url: &str, start: usize, total: usize, bytes: &[u8]) -> Result<Reply, reqwest::Error> {
    let range = format!("bytes {start}-{}/{total}", start + bytes.len() - 1);
    send("PUT", url, &[("content-range", range.as_str())], bytes, PATIENCE)
}

/// Deterministic bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 4096) % 251) as u8).collect()
}

#[test]
fn quick_xor_hash_follows_microsoft_and_rclone() {
    assert_eq!(quick_xor_hash(b"hello world"), "aCgDG9jwBhDc4Q1yawMZAAAAAAA=");
    // `rclone hashsum quickxor` of as many bytes of the pattern.
    for (len, expected) in [
        (0, "0000000000000000000000000000000000000000"),
        (1, "0000000000000000000000000100000000000000"),
        (159, "2cbfa92134fc04efb9d43c5f4af5ea99f803ed6e"),
        (160, "2cbfa92134fc04efb9d43c5f75f5ea99f8034d63"),
        (161, "58bfa92134fc04efb9d43c5f74f5ea99f8034d63"),
        (1_048_579, "a17032a1fa1835c9649b907cdbcd544cf3a8a7c8"),
    ] {
        let bytes = pattern(len);
        let digest = base64::engine::general_purpose::STANDARD.decode(quick_xor_hash(&bytes)).expect("base64");
        assert_eq!(hex(&digest), expected, "{len} bytes");
        // In pieces, as upload sessions feed it.
        let mut hasher = QuickXor::default();
        for piece in bytes.chunks(997) {
            hasher.update(piece);
        }
        assert_eq!(hex(&hasher.digest()), expected, "{len} bytes in pieces");
    }
}

#[test]
fn the_device_code_flow_waits_slows_down_and_signs_in() {
    let od = OneDrive::start();
    od.with(|s| {
        s.device_interval = 1;
        s.slow_down_increment = 1;
    });
    let no_scope = identity(&od, "common", "devicecode", &[("client_id", CLIENT_ID)]);
    assert_eq!(no_scope.oauth_error(), (400, "invalid_request".into(), 900_144));
    let asked = identity(&od, "consumers", "devicecode", &[("client_id", CLIENT_ID), ("scope", SCOPE)]).json();
    let user_code = asked["user_code"].as_str().expect("user_code").to_owned();
    assert_eq!(od.pending_user_code().as_deref(), Some(user_code.as_str()));
    assert_eq!((asked["expires_in"].clone(), asked["interval"].clone()), (json!(900), json!(1)));
    let page = format!("{}/devicelogin", od.url);
    assert_eq!(asked["verification_uri"], page.as_str());
    assert_eq!(
        asked["message"],
        format!(
            "To sign in, use a web browser to open the page {page} and enter the code {user_code} to authenticate."
        )
    );
    let device_code = asked["device_code"].as_str().expect("device_code").to_owned();
    let poll = |tenant: &str| {
        let form = [("grant_type", DEVICE_GRANT), ("client_id", CLIENT_ID), ("device_code", device_code.as_str())];
        identity(&od, tenant, "token", &form)
    };
    let pending = poll("consumers");
    assert_eq!(pending.oauth_error(), (400, "authorization_pending".into(), 70_016));
    assert!(pending.json()["error_description"].as_str().is_some_and(|d| d.starts_with("AADSTS70016: ")));
    // Too soon: slow_down, and the interval grows (to 2 s here).
    assert_eq!(poll("consumers").oauth_error().1, "slow_down");
    assert_eq!(poll("common").oauth_error().1, "bad_verification_code", "another tenant");
    std::thread::sleep(Duration::from_millis(2_050));
    od.with(|s| s.slow_downs = 1);
    assert_eq!(poll("consumers").oauth_error().1, "slow_down", "scripted");
    od.approve_device(&user_code.to_lowercase());
    assert_eq!(od.pending_user_code(), None);
    std::thread::sleep(Duration::from_millis(3_050));
    let tokens = poll("consumers");
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    assert_eq!((tokens["token_type"].clone(), tokens["scope"].clone()), (json!("Bearer"), json!(SCOPE)));
    assert_eq!((tokens["expires_in"].clone(), tokens["ext_expires_in"].clone()), (json!(3600), json!(3600)));
    assert!(tokens["refresh_token"].is_string() && tokens["access_token"].is_string(), "{tokens}");
    assert_eq!(poll("consumers").oauth_error().1, "bad_verification_code", "a device code is good once");
    let grants = od.with(|s| s.token_requests.clone());
    assert_eq!(grants, vec![DEVICE_GRANT; 6]);
}

#[test]
fn device_codes_are_declined_and_expire() {
    let od = OneDrive::start();
    let ask = || {
        let asked = identity(&od, "common", "devicecode", &[("client_id", CLIENT_ID), ("scope", "Files.ReadWrite")]);
        let asked = asked.json();
        (asked["device_code"].as_str().expect("code").to_owned(), asked["user_code"].as_str().expect("code").to_owned())
    };
    let poll = |device_code: &str| {
        identity(
            &od,
            "common",
            "token",
            &[("grant_type", DEVICE_GRANT), ("client_id", CLIENT_ID), ("device_code", device_code)],
        )
    };
    let (device_code, user_code) = ask();
    od.decline_device(&user_code);
    assert_eq!(od.pending_user_code(), None);
    assert_eq!(poll(&device_code).oauth_error(), (400, "authorization_declined".into(), 65_004));
    od.with(|s| s.device_expires_in = 0);
    let (device_code, _) = ask();
    assert_eq!(poll(&device_code).oauth_error(), (400, "expired_token".into(), 70_019));
    assert_eq!(poll("no-such-code").oauth_error().1, "bad_verification_code");
    let other = identity(&od, "common", "devicecode", &[("client_id", "someone-else"), ("scope", SCOPE)]);
    assert_eq!(other.oauth_error(), (400, "unauthorized_client".into(), 700_016));
    let secret = [("client_id", CLIENT_ID), ("scope", SCOPE), ("client_secret", "s")];
    assert_eq!(identity(&od, "common", "devicecode", &secret).oauth_error().1, "invalid_client");
    // Without offline_access there is no refresh token.
    od.with(|s| s.device_expires_in = 900);
    let (device_code, user_code) = ask();
    od.approve_device(&user_code);
    let tokens = poll(&device_code).json();
    assert!(tokens.get("refresh_token").is_none() && tokens["access_token"].is_string(), "{tokens}");
}

/// An authorize URL as photosync prints it.
fn authorize_url(od: &OneDrive, challenge: &str, scope: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/consumers/oauth2/v2.0/authorize", od.url)).expect("URL");
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", "http://localhost:5123/")
        .append_pair("scope", scope)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "st-42");
    url.to_string()
}

#[test]
fn the_browser_sign_in_checks_pkce_and_the_redirect_uri() {
    let od = OneDrive::start();
    let verifier = "photosync-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    let redirect = od.approve_browser(&authorize_url(&od, &challenge, SCOPE));
    let back = url::Url::parse(&redirect).expect("redirect URL");
    assert!(redirect.starts_with("http://localhost:5123/?code="), "{redirect}");
    let query: std::collections::BTreeMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "st-42");
    let code = query["code"].clone();
    let redeem = |verifier: &str, redirect_uri: &str| {
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        identity(&od, "consumers", "token", &form)
    };
    assert_eq!(redeem(&"x".repeat(43), "http://localhost:5123/").oauth_error(), (400, "invalid_grant".into(), 501_481));
    assert_eq!(redeem(verifier, "http://localhost:5124/").oauth_error(), (400, "invalid_grant".into(), 500_112));
    let tokens = redeem(verifier, "http://localhost:5123/");
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    assert_eq!((tokens["scope"].clone(), tokens["expires_in"].clone()), (json!(SCOPE), json!(3600)));
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let access = tokens["access_token"].as_str().expect("access_token");
    assert_eq!(graph(&od, "GET", access, "me/drive/root", b"").status, 200);
    assert_eq!(redeem(verifier, "http://localhost:5123/").oauth_error(), (400, "invalid_grant".into(), 70_000));
    assert_eq!(od.with(|s| s.token_requests.clone()), vec!["authorization_code"; 4]);
}

#[test]
#[should_panic(expected = "code_challenge_method")]
fn the_browser_sign_in_wants_s256() {
    let od = OneDrive::start();
    let url =
        authorize_url(&od, &"a".repeat(43), SCOPE).replace("code_challenge_method=S256", "code_challenge_method=plain");
    od.approve_browser(&url);
}

#[test]
fn refresh_tokens_rotate_and_are_revoked() {
    let od = OneDrive::start();
    let first = od.grant();
    let renew = |token: &str| {
        let reply = refresh(&od, token);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let tokens = reply.json();
        let text = |name: &str| tokens[name].as_str().expect("a token").to_owned();
        (text("access_token"), text("refresh_token"))
    };
    let (access, second) = renew(&first);
    assert_ne!(first, second, "a new refresh token at every use");
    assert_eq!(graph(&od, "GET", &access, "me/drive/root", b"").status, 200);
    let (_, third) = renew(&first);
    assert_ne!(third, second, "the old one still works, and rotates");
    od.with(|s| s.old_refresh_tokens_valid = false);
    let (_, fourth) = renew(&third);
    let stale = refresh(&od, &third);
    assert_eq!(stale.oauth_error(), (400, "invalid_grant".into(), 700_082));
    assert!(
        stale.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS700082: The refresh token has expired due to inactivity"))
    );
    let wider = [
        ("grant_type", "refresh_token"),
        ("client_id", CLIENT_ID),
        ("refresh_token", fourth.as_str()),
        ("scope", "Mail.Read"),
    ];
    assert_eq!(identity(&od, "common", "token", &wider).oauth_error().1, "invalid_grant");
    assert_eq!(od.with(|s| s.refreshes), 5);

    // Expired and revoked access.
    od.with(State::expire_access_tokens);
    let expired = graph(&od, "GET", &access, "me/drive/root", b"");
    assert_eq!(expired.graph_error(), (401, "InvalidAuthenticationToken".into(), String::new()));
    assert_eq!(expired.json()["error"]["message"], "Access token has expired or is not yet valid.");
    assert!(expired.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    let (access, _) = renew(&fourth);
    od.with(State::revoke);
    assert_eq!(graph(&od, "GET", &access, "me/drive/root", b"").status, 401);
    assert_eq!(refresh(&od, &fourth).oauth_error().1, "invalid_grant");
    let anonymous = send("GET", &format!("{}/v1.0/me/drive/root", od.url), &[], b"", PATIENCE).expect("an answer");
    assert_eq!(anonymous.graph_error().1, "InvalidAuthenticationToken");
}

#[test]
fn an_upload_session_takes_fragments_resumes_and_commits() {
    let od = OneDrive::start();
    let token = access_token(&od);
    let content = pattern(2 * UNIT + 1_000);
    let item = json!({"item": {
        "@microsoft.graph.conflictBehavior": "fail",
        "fileSystemInfo": {"lastModifiedDateTime": "2024-05-01T12:00:00Z", "createdDateTime": "2024-05-01T11:00:00+01:00"},
    }});
    let created = create(&od, &token, "/Backup/Vid%C3%A9o%201.mp4", &item);
    assert_eq!(created.status, 200, "{}", created.text());
    let created = created.json();
    assert_eq!(created["nextExpectedRanges"], json!(["0-"]));
    let expires: jiff::Timestamp = created["expirationDateTime"].as_str().expect("expiry").parse().expect("RFC 3339");
    assert!(expires > jiff::Timestamp::now());
    let url = created["uploadUrl"].as_str().expect("uploadUrl").to_owned();
    assert!(url.starts_with(&format!("{}/upload/", od.url)) && url.contains("?tempauth="), "{url}");

    let first = put(&url, 0, content.len(), &content[..UNIT]).expect("an answer");
    assert_eq!((first.status, first.json()["nextExpectedRanges"].clone()), (202, json!(["327680-"])));
    od.with(|s| s.faults.push_back(Fault::LoseResponse { route: "upload" }));
    assert!(put(&url, UNIT, content.len(), &content[UNIT..2 * UNIT]).is_err(), "the response was lost");
    let again = put(&url, UNIT, content.len(), &content[UNIT..2 * UNIT]).expect("an answer");
    assert_eq!(again.graph_error(), (416, "invalidRange".into(), "fragmentOverlap".into()));
    let status = send("GET", &url, &[], b"", PATIENCE).expect("an answer");
    assert_eq!((status.status, status.json()["nextExpectedRanges"].clone()), (200, json!(["655360-"])));
    let last = put(&url, 2 * UNIT, content.len(), &content[2 * UNIT..]).expect("an answer");
    assert_eq!(last.status, 201, "{}", last.text());
    let stored = last.json();
    assert_eq!((stored["name"].clone(), stored["size"].clone()), (json!("Vidéo 1.mp4"), json!(content.len())));
    assert_eq!(stored["file"]["hashes"]["quickXorHash"], quick_xor_hash(&content));
    assert_eq!(stored["file"]["mimeType"], "video/mp4");
    assert_eq!(stored["fileSystemInfo"]["lastModifiedDateTime"], "2024-05-01T12:00:00Z");
    assert_eq!(stored["fileSystemInfo"]["createdDateTime"], "2024-05-01T10:00:00Z");
    assert_eq!(stored["parentReference"]["path"], "/drive/root:/Backup");
    assert_eq!(od.files().get("/Backup/Vidéo 1.mp4"), Some(&content));
    assert_eq!(od.with(|s| s.writes), 1);
    let received: Vec<_> =
        od.with(|s| s.received.iter().map(|r| (r.start, r.len, r.accepted, r.authorization)).collect());
    let (unit, rest) = (FRAGMENT_UNIT, 1_000);
    assert_eq!(
        received,
        [(0, unit, true, false), (unit, unit, true, false), (unit, unit, false, false), (2 * unit, rest, true, false)]
    );
    assert_eq!(send("GET", &url, &[], b"", PATIENCE).expect("an answer").graph_error().1, "itemNotFound");
    let requests = od.with(|s| s.requests.clone());
    assert!(requests.contains(&"GET upload".to_owned()) && requests.contains(&"PUT upload".to_owned()), "{requests:?}");

    // Looked up in another case; downloaded through the redirect.
    let found = graph(&od, "GET", &token, "me/drive/root:/BACKUP/vid%C3%A9o%201.MP4:", b"");
    assert_eq!((found.status, found.json()["id"].clone()), (200, stored["id"].clone()));
    let etag = stored["eTag"].as_str().expect("eTag");
    let bearer = format!("Bearer {token}");
    let item_url = format!("{}/v1.0/me/drive/root:/Backup/Vid%C3%A9o%201.mp4", od.url);
    let cached = send("GET", &item_url, &[("authorization", &bearer), ("if-none-match", etag)], b"", PATIENCE);
    assert_eq!(cached.expect("an answer").status, 304);
    let moved = graph(&od, "GET", &token, "me/drive/root:/Backup/Vid%C3%A9o%201.mp4:/content", b"");
    assert_eq!(moved.status, 302);
    let location = moved.header("location").expect("Location").to_owned();
    let download = send("GET", &location, &[], b"", PATIENCE).expect("an answer");
    assert_eq!((download.status, download.body == content), (200, true));
    let part = send("GET", &location, &[("range", "bytes=2-5")], b"", PATIENCE).expect("an answer");
    assert_eq!((part.status, part.body.as_slice()), (206, &content[2..6]));
    assert_eq!(part.header("content-range"), Some(format!("bytes 2-5/{}", content.len()).as_str()));
    let folder = graph(&od, "GET", &token, "me/drive/root:/Backup", b"").json();
    assert_eq!((folder["folder"]["childCount"].clone(), folder["size"].clone()), (json!(1), json!(content.len())));
    assert_eq!(graph(&od, "GET", &token, "me/drive/root:/Backup/none.mp4", b"").graph_error().1, "itemNotFound");

    // Cancelled sessions, expired sessions.
    let url = session(&od, &token, "/Backup/other.mp4");
    assert_eq!(send("DELETE", &url, &[], b"", PATIENCE).expect("an answer").status, 204);
    assert_eq!(send("GET", &url, &[], b"", PATIENCE).expect("an answer").status, 404);
    assert_eq!(send("DELETE", &url, &[], b"", PATIENCE).expect("an answer").status, 404);
    let url = session(&od, &token, "/Backup/other.mp4");
    od.with(State::expire_sessions);
    assert_eq!(put(&url, 0, 3, b"abc").expect("an answer").graph_error().1, "itemNotFound");
}

#[test]
fn fragments_follow_the_rules() {
    let od = OneDrive::start();
    let token = access_token(&od);
    let url = session(&od, &token, "/a.jpg");
    let content = pattern(3 * UNIT);
    let bearer = format!("Bearer {token}");
    let range = format!("bytes 0-{}/{}", UNIT - 1, content.len());
    let headers = [("content-range", range.as_str()), ("authorization", bearer.as_str())];
    let with_token = send("PUT", &url, &headers, &content[..UNIT], PATIENCE).expect("an answer");
    assert_eq!(with_token.graph_error(), (401, "unauthenticated".into(), String::new()));
    let last = od.with(|s| s.received.last().cloned()).expect("recorded");
    assert_eq!((last.authorization, last.accepted, last.len), (true, false, FRAGMENT_UNIT));

    let odd = put(&url, 0, content.len(), &content[..1_000]).expect("an answer");
    assert_eq!(odd.graph_error().1, "invalidRequest");
    assert!(odd.json()["error"]["message"].as_str().is_some_and(|m| m.contains("fragment")), "{}", odd.text());
    let gap = put(&url, UNIT, content.len(), &content[UNIT..2 * UNIT]).expect("an answer");
    assert_eq!(gap.graph_error(), (416, "invalidRange".into(), "fragmentOutOfOrder".into()));
    assert_eq!(put(&url, 0, content.len(), &content[..UNIT]).expect("an answer").status, 202);
    let other_total = put(&url, UNIT, content.len() + 1, &content[UNIT..2 * UNIT]).expect("an answer");
    assert_eq!(other_total.graph_error(), (400, "invalidRequest".into(), "fragmentLengthMismatch".into()));
    od.with(|s| s.max_fragment = 2 * FRAGMENT_UNIT);
    let large = put(&url, UNIT, content.len(), &content[UNIT..]).expect("an answer");
    assert_eq!(large.graph_error(), (413, "invalidRequest".into(), "maxFragmentLengthExceeded".into()));
    let no_range = send("PUT", &url, &[], &content[UNIT..2 * UNIT], PATIENCE).expect("an answer");
    assert_eq!(no_range.graph_error().1, "invalidRequest");
    let forged = url.replace("tempauth=", "tempauth=x");
    assert_eq!(put(&forged, UNIT, content.len(), &content[UNIT..2 * UNIT]).expect("an answer").status, 401);
    // The last fragment may be of any size.
    assert_eq!(put(&url, UNIT, content.len(), &content[UNIT..2 * UNIT]).expect("an answer").status, 202);
    let done = put(&url, 2 * UNIT, content.len(), &content[2 * UNIT..]).expect("an answer");
    assert_eq!(done.status, 201, "{}", done.text());
    let accepted = od.with(|s| s.received.iter().filter(|r| r.accepted).count());
    assert_eq!(accepted, 3);
}

#[test]
fn conflicts_follow_the_conflict_behavior() {
    let od = OneDrive::start();
    let token = access_token(&od);
    od.put("/Photos/a.jpg", b"theirs");
    let before = graph(&od, "GET", &token, "me/drive/root:/Photos/a.jpg", b"").json();
    let at_creation =
        create(&od, &token, "/photos/A.JPG", &json!({"item": {"@microsoft.graph.conflictBehavior": "fail"}}));
    assert_eq!(at_creation.graph_error(), (409, "nameAlreadyExists".into(), String::new()));

    // A file that appears during the session: a 409 at the last fragment,
    // and the session stays.
    let content = pattern(UNIT + 10);
    let url = session(&od, &token, "/Photos/b.jpg");
    assert_eq!(put(&url, 0, content.len(), &content[..UNIT]).expect("an answer").status, 202);
    let second = create(&od, &token, "/Photos/B.jpg", &json!({}));
    assert_eq!(second.graph_error().1, "nameAlreadyExists", "one session per path");
    od.put("/Photos/b.jpg", b"also theirs");
    let last = put(&url, UNIT, content.len(), &content[UNIT..]).expect("an answer");
    assert_eq!(last.graph_error(), (409, "nameAlreadyExists".into(), String::new()));
    assert_eq!(od.files()["/Photos/b.jpg"], b"also theirs");
    let kept = send("GET", &url, &[], b"", PATIENCE).expect("an answer");
    assert_eq!((kept.status, kept.json()["nextExpectedRanges"].clone()), (200, json!([])));
    assert_eq!(od.with(|s| s.writes), 0);

    // Replace keeps the item; rename finds a free name.
    let upload = |behavior: &str| {
        let created =
            create(&od, &token, "/Photos/a.jpg", &json!({"item": {"@microsoft.graph.conflictBehavior": behavior}}));
        let url = created.json()["uploadUrl"].as_str().expect("uploadUrl").to_owned();
        put(&url, 0, 4, b"mine").expect("an answer")
    };
    let replaced = upload("replace");
    assert_eq!((replaced.status, replaced.json()["id"].clone()), (200, before["id"].clone()));
    let renamed = upload("rename");
    assert_eq!((renamed.status, renamed.json()["name"].clone()), (201, json!("a 1.jpg")));
    assert_eq!(od.files()["/Photos/a 1.jpg"], b"mine");
    od.with(|s| s.one_session_per_path = false);
    session(&od, &token, "/Photos/c.jpg");
    session(&od, &token, "/Photos/c.jpg");

    // Bad input.
    let refused = |path: &str, body: &Value| create(&od, &token, path, body).graph_error();
    let unknown = refused("/x.jpg", &json!({"item": {"colour": "red"}}));
    assert_eq!(unknown, (400, "invalidRequest".into(), String::new()));
    assert_eq!(refused("/x.jpg", &json!({"colour": "red"})).1, "invalidRequest");
    assert_eq!(refused("/x.jpg", &json!({"item": {"name": "y.jpg"}})).1, "invalidRequest");
    assert_eq!(refused("/x.jpg", &json!({"item": {"@microsoft.graph.conflictBehavior": "keep"}})).1, "invalidRequest");
    let bad_time = json!({"item": {"fileSystemInfo": {"lastModifiedDateTime": "yesterday"}}});
    assert_eq!(refused("/x.jpg", &bad_time).1, "invalidRequest");
    assert_eq!(refused("/what%3F.jpg", &json!({})), (400, "invalidRequest".into(), "invalidPath".into()));
    assert_eq!(refused("/DCIM/desktop.ini", &json!({})).2, "invalidPath");
    assert_eq!(refused("/CON", &json!({})).2, "invalidPath");
    assert_eq!(refused("/a.jpg%20", &json!({})).2, "invalidPath");
    assert_eq!(create(&od, &token, "/what%253F.jpg", &json!({})).status, 200, "a % in a name is fine");
    od.with(|s| s.quota = Some(s.used() + 10));
    let full = refused("/big.mp4", &json!({"item": {"fileSize": 100}}));
    assert_eq!(full, (507, "quotaLimitReached".into(), String::new()));
}

#[test]
fn throttling_and_stalls_are_scripted() {
    let od = OneDrive::start();
    let token = access_token(&od);
    od.with(|s| s.faults.push_back(Fault::Status { route: "*", status: 429, retry_after: Some(3) }));
    let throttled = graph(&od, "GET", &token, "me/drive/root", b"");
    assert_eq!(throttled.graph_error(), (429, "activityLimitReached".into(), "throttledRequest".into()));
    assert_eq!(throttled.header("retry-after"), Some("3"));
    assert_eq!(throttled.json()["error"]["message"], "The request has been throttled");
    let url = session(&od, &token, "/a.jpg");
    od.with(|s| s.faults.push_back(Fault::Status { route: "upload", status: 503, retry_after: Some(1) }));
    let unavailable = put(&url, 0, 3, b"abc").expect("an answer");
    assert_eq!((unavailable.status, unavailable.header("retry-after")), (503, Some("1")));
    assert!(od.with(|s| s.received.iter().all(|r| !r.accepted)));
    assert_eq!(put(&url, 0, 3, b"abc").expect("an answer").status, 201);
    od.with(|s| s.faults.push_back(Fault::Status { route: "oauth2/v2.0/token", status: 503, retry_after: None }));
    assert_eq!(refresh(&od, &od.grant()).oauth_error().1, "temporarily_unavailable");
    od.with(|s| s.faults.push_back(Fault::Stall { route: "createUploadSession" }));
    let bearer = format!("Bearer {token}");
    let stalled = send(
        "POST",
        &format!("{}/v1.0/me/drive/root:/b.jpg:/createUploadSession", od.url),
        &[("authorization", &bearer)],
        b"{}",
        Duration::from_millis(300),
    );
    assert!(stalled.is_err_and(|e| e.is_timeout()));
    assert!(od.with(|s| s.faults.is_empty()));
}

#[test]
fn the_app_folder_is_its_own_place() {
    let od = OneDrive::start();
    let narrow = access_token_for(&od, "Files.ReadWrite.AppFolder offline_access");
    let folder = graph(&od, "GET", &narrow, "me/drive/special/approot", b"");
    assert_eq!(folder.status, 200, "{}", folder.text());
    let folder = folder.json();
    assert_eq!(
        (folder["name"].clone(), folder["specialFolder"].clone()),
        (json!("photosync"), json!({"name": "approot"}))
    );
    let created = graph(&od, "POST", &narrow, "me/drive/special/approot:/Photos/x.jpg:/createUploadSession", b"");
    let url = created.json()["uploadUrl"].as_str().expect("uploadUrl").to_owned();
    let stored = put(&url, 0, 3, b"abc").expect("an answer").json();
    assert_eq!(stored["parentReference"]["path"], "/drive/root:/Apps/photosync/Photos");
    assert_eq!(od.files().keys().collect::<Vec<_>>(), ["approot:/Photos/x.jpg"]);
    let outside = graph(&od, "GET", &narrow, "me/drive/root:/Photos", b"");
    assert_eq!(outside.graph_error(), (403, "accessDenied".into(), String::new()));
    let token = access_token(&od);
    assert_eq!(graph(&od, "GET", &token, "me/drive/root:/Apps/photosync/Photos/x.jpg", b"").json()["size"], 3);
    let drive = graph(&od, "GET", &token, "me/drive", b"").json();
    assert_eq!((drive["driveType"].clone(), drive["quota"]["used"].clone()), (json!("personal"), json!(3)));
    let root = graph(&od, "GET", &token, "me/drive/root", b"").json();
    assert_eq!((root["name"].clone(), root["folder"]["childCount"].clone()), (json!("root"), json!(1)));
}
