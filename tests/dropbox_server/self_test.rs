//! The fake's own tests: the content hash against Dropbox's published
//! example and rclone, and each route over real HTTP.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{CLIENT_ID, Dropbox, Fault, SCOPE, State, content_hash, hex};

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
}

/// POSTs to the fake and waits for the answer (or the transport error).
fn post(url: &str, headers: &[(&str, &[u8])], body: &[u8], timeout: Duration) -> Result<Reply, reqwest::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut request = reqwest::Client::new().post(url).timeout(timeout).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value).expect("header value"));
        }
        let response = request.send().await?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Ok(Reply { status, headers, body: response.bytes().await?.to_vec() })
    })
}

const PATIENCE: Duration = Duration::from_secs(10);

/// A content-upload call to `/2/files/{route}` with `arg` as the header.
fn upload(dropbox: &Dropbox, token: &str, route: &str, arg: &str, body: &[u8]) -> Result<Reply, reqwest::Error> {
    let bearer = format!("Bearer {token}");
    let headers: [(&str, &[u8]); 3] = [
        ("authorization", bearer.as_bytes()),
        ("dropbox-api-arg", arg.as_bytes()),
        ("content-type", b"application/octet-stream"),
    ];
    post(&format!("{}/2/files/{route}", dropbox.url), &headers, body, PATIENCE)
}

/// An RPC call to `/2/{function}`.
fn rpc(dropbox: &Dropbox, token: &str, function: &str, arg: &Value) -> Reply {
    let bearer = format!("Bearer {token}");
    let headers: [(&str, &[u8]); 2] = [("authorization", bearer.as_bytes()), ("content-type", b"application/json")];
    post(&format!("{}/2/{function}", dropbox.url), &headers, arg.to_string().as_bytes(), PATIENCE).expect("an answer")
}

/// A token request.
fn token(dropbox: &Dropbox, form: &[(&str, &str)]) -> Reply {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let headers: [(&str, &[u8]); 1] = [("content-type", b"application/x-www-form-urlencoded")];
    post(&format!("{}/oauth2/token", dropbox.url), &headers, body.as_bytes(), PATIENCE).expect("an answer")
}

/// An access token got from a granted refresh token.
fn access_token(dropbox: &Dropbox) -> String {
    let refresh = dropbox.grant();
    let reply =
        token(dropbox, &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", CLIENT_ID)]);
    reply.json()["access_token"].as_str().expect("access_token").to_owned()
}

#[test]
fn content_hash_follows_dropbox() {
    assert_eq!(content_hash(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    // The published example (a 9,711,423-byte photo of the Milky Way): its
    // three blocks' SHA-256 digests, combined, give its content hash.
    let blocks = [
        "2a846fa617c3361fc117e1c5c1e1838c336b6a5cef982c1a2d9bdf68f2f1992a",
        "c68469027410ea393eba6551b9fa1e26db775f00eae70a0c3c129a0011a39cf9",
        "7376192de020925ce6c5ef5a8a0405e931b0a9a8c75517aacd9ca24a8a56818b",
    ];
    let digests: Vec<u8> = blocks
        .concat()
        .as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ASCII"), 16).expect("hex"))
        .collect();
    assert_eq!(hex(&Sha256::digest(&digests)), "485291fa0ee50c016982abbfa943957bcd231aae0492ccbaa22c58e3997b35e0");
    // As many bytes of a pattern, hashed by `rclone hashsum dropbox`.
    let pattern: Vec<u8> = (0..9_711_423_usize).map(|i| ((i * 7 + i / 4096) % 251) as u8).collect();
    assert_eq!(content_hash(&pattern), "cf220e20dc372dd9b688037b088fa6d3ef2f33bafdcbdbabfdb17c6488a330b5");
}

#[test]
fn signs_in_with_pkce_and_refreshes() {
    let dropbox = Dropbox::start();
    let verifier = "photosync-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    let authorize = format!(
        "https://www.dropbox.com/oauth2/authorize?client_id={CLIENT_ID}&response_type=code&token_access_type=offline\
         &code_challenge={challenge}&code_challenge_method=S256"
    );
    let exchange = |code: &str, verifier: &str| {
        let form = [("grant_type", "authorization_code"), ("code", code), ("code_verifier", verifier)];
        token(&dropbox, &[&form[..], &[("client_id", CLIENT_ID)]].concat())
    };
    // A wrong verifier spends the code.
    let code = dropbox.approve(&authorize);
    let wrong = exchange(&code, &"x".repeat(43));
    assert_eq!((wrong.status, wrong.json()["error_description"].clone()), (400, json!("invalid code verifier")));
    assert_eq!(exchange(&code, verifier).json()["error"], "invalid_grant");
    let code = dropbox.approve(&authorize);
    let tokens = exchange(&code, verifier).json();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 14_400);
    assert_eq!((tokens["scope"].clone(), tokens["uid"].clone()), (json!(SCOPE), json!("12345")));
    assert_eq!(exchange(&code, verifier).json()["error_description"], "code doesn't exist or has expired");
    let access = tokens["access_token"].as_str().expect("access_token").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("refresh_token").to_owned();
    assert_eq!(rpc(&dropbox, &access, "check/user", &json!({"query": "ping"})).json(), json!({"result": "ping"}));

    let renew =
        || token(&dropbox, &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", CLIENT_ID)]);
    dropbox.with(State::expire_access_tokens);
    let expired = rpc(&dropbox, &access, "check/user", &json!({"query": "ping"}));
    assert_eq!((expired.status, expired.json()["error_summary"].clone()), (401, json!("expired_access_token/..")));
    let renewed = renew().json();
    assert!(renewed.get("refresh_token").is_none(), "refresh tokens are not rotated: {renewed}");
    let access = renewed["access_token"].as_str().expect("access_token").to_owned();
    assert_eq!(rpc(&dropbox, &access, "check/user", &json!({})).json(), json!({"result": ""}));
    let other = token(&dropbox, &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", "x")]);
    assert_eq!(other.json()["error"], "invalid_client");
    assert_eq!(
        token(&dropbox, &[("grant_type", "password"), ("client_id", CLIENT_ID)]).json()["error"],
        "unsupported_grant_type"
    );
    assert!(dropbox.with(|s| s.refresh_tokens.values().all(|g| g.scope == SCOPE)));

    dropbox.with(State::revoke);
    assert_eq!(renew().json()["error_description"], "refresh token is invalid or revoked");
    let revoked = rpc(&dropbox, &access, "check/user", &json!({}));
    assert_eq!((revoked.status, revoked.json()["error"][".tag"].clone()), (401, json!("invalid_access_token")));
    assert_eq!(dropbox.with(|s| s.token_requests), 8);
}

#[test]
#[should_panic(expected = "redirect_uri")]
fn approving_refuses_a_redirect_uri() {
    let dropbox = Dropbox::start();
    dropbox.approve(&format!(
        "{}/oauth2/authorize?client_id={CLIENT_ID}&response_type=code&token_access_type=offline&code_challenge={}\
         &code_challenge_method=S256&redirect_uri=http://localhost:1",
        dropbox.url,
        "a".repeat(43)
    ));
}

#[test]
fn uploads_follow_write_mode() {
    let dropbox = Dropbox::start();
    let token = access_token(&dropbox);
    let send = |arg: &str, body: &[u8]| upload(&dropbox, &token, "upload", arg, body).expect("an answer");
    let arg =
        r#"{"path":"/Photos/caf\u00e9.jpg","mode":"add","autorename":false,"client_modified":"2024-05-01T12:00:00Z"}"#;
    let first = send(arg, b"first");
    assert_eq!(first.status, 200, "{}", first.text());
    let metadata = first.json();
    assert_eq!(metadata["name"], "café.jpg");
    assert_eq!(metadata["path_lower"], "/photos/café.jpg");
    assert_eq!(
        (metadata["size"].clone(), metadata["client_modified"].clone()),
        (json!(5), json!("2024-05-01T12:00:00Z"))
    );
    assert_eq!(metadata["content_hash"], content_hash(b"first"));
    // The same bytes again, in another case: nothing written, no conflict.
    let again = send(&arg.replace("/Photos/", "/PHOTOS/"), b"first");
    assert_eq!((again.status, again.json()["rev"].clone()), (200, metadata["rev"].clone()));
    // Other bytes: a conflict, the bytes kept in a session.
    let conflict = send(arg, b"second").json();
    assert_eq!(conflict["error_summary"], "path/conflict/file/..");
    let kept = conflict["error"]["upload_session_id"].as_str().expect("upload_session_id").to_owned();
    assert!(dropbox.with(|s| s.sessions.values().any(|session| session.id == kept && session.closed)));
    let renamed = send(&arg.replace(r#""autorename":false"#, r#""autorename":true"#), b"second");
    assert_eq!(renamed.json()["path_display"], "/Photos/café (1).jpg");
    let overwritten = send(&arg.replace(r#""add""#, r#"{".tag":"overwrite"}"#), b"third");
    assert_eq!(overwritten.json()["id"], metadata["id"]);
    assert_eq!(dropbox.with(|s| s.writes), 3);
    // Raw UTF-8 in the header, unknown fields, bad times, bad names.
    let raw = send(&arg.replace(r"\u00e9", "é"), b"x");
    assert_eq!(raw.status, 400);
    assert!(raw.text().ends_with("HTTP header \"Dropbox-API-Arg\": could not decode input as JSON"), "{}", raw.text());
    assert_eq!(send(r#"{"path":"/a.jpg","colour":1}"#, b"x").status, 400);
    assert_eq!(send(r#"{"path":"/a.jpg","client_modified":"2024-05-01T12:00:00.5Z"}"#, b"x").status, 400);
    assert_eq!(send(r#"{"path":"a.jpg"}"#, b"x").status, 400);
    assert_eq!(send(r#"{"path":"/DCIM/Thumbs.db"}"#, b"x").json()["error_summary"], "path/disallowed_name/..");
    assert_eq!(send(r#"{"path":"/DCIM//a.jpg"}"#, b"x").json()["error_summary"], "path/malformed_path/..");
    let hash = content_hash(b"other");
    let mismatch = send(&format!(r#"{{"path":"/b.jpg","content_hash":"{hash}"}}"#), b"x").json();
    assert_eq!(mismatch["error"], json!({".tag": "content_hash_mismatch"}));
    dropbox.with(|s| s.max_request = 2);
    assert_eq!(send(r#"{"path":"/c.jpg"}"#, b"xyz").json()["error_summary"], "payload_too_large/..");
    assert!(dropbox.with(|s| s.args_seen.iter().any(|seen| seen == arg)));
    assert_eq!(dropbox.files().keys().collect::<Vec<_>>(), ["/Photos/café (1).jpg", "/Photos/café.jpg"]);
}

#[test]
fn downloads_and_looks_up() {
    let dropbox = Dropbox::start();
    let token = access_token(&dropbox);
    dropbox.put("/Photos/Ünïcode.jpg", b"bytes");
    let bearer = format!("Bearer {token}");
    let arg = r#"{"path":"/photos/\u00fcN\u00efCODE.JPG"}"#;
    let headers: [(&str, &[u8]); 2] = [("authorization", bearer.as_bytes()), ("dropbox-api-arg", arg.as_bytes())];
    let url = format!("{}/2/files/download", dropbox.url);
    let download = post(&url, &headers, b"", PATIENCE).expect("an answer");
    assert_eq!((download.status, download.body.as_slice()), (200, &b"bytes"[..]));
    let result = download.headers.get("dropbox-api-result").expect("Dropbox-API-Result").as_bytes();
    assert!(result.iter().all(|&b| b < 0x7F), "header-safe: {}", String::from_utf8_lossy(result));
    let result: Value = serde_json::from_slice(result).expect("JSON");
    assert_eq!(result["path_display"], "/Photos/Ünïcode.jpg");
    let typed = [headers[0], headers[1], ("content-type", &b"application/octet-stream"[..])];
    assert_eq!(post(&url, &typed, b"", PATIENCE).expect("an answer").status, 400);

    let metadata = |path: &str| rpc(&dropbox, &token, "files/get_metadata", &json!({"path": path})).json();
    assert_eq!(metadata("/PHOTOS/ünïcode.jpg")["id"], result["id"]);
    assert_eq!(metadata(result["id"].as_str().expect("id"))["path_lower"], "/photos/ünïcode.jpg");
    assert_eq!(metadata("/photos")[".tag"], "folder");
    assert_eq!(metadata("/photos")["path_display"], "/Photos");
    let missing = metadata("/Photos/none.jpg");
    assert_eq!(missing["error"], json!({".tag": "path", "path": {".tag": "not_found"}}));
    assert_eq!(missing["error_summary"], "path/not_found/..");
    let no_token =
        post(&format!("{}/2/check/user", dropbox.url), &[("content-type", b"application/json")], b"{}", PATIENCE);
    assert_eq!(no_token.expect("an answer").status, 400);
    assert_eq!(rpc(&dropbox, "sl.unknown", "check/user", &json!({})).status, 401);
}

#[test]
fn keeps_upload_sessions() {
    let dropbox = Dropbox::start();
    let token = access_token(&dropbox);
    let call = |route: &str, arg: &Value, body: &[u8]| upload(&dropbox, &token, route, &arg.to_string(), body);
    let id = call("upload_session/start", &json!({"close": false}), b"abc").expect("an answer").json()["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();
    let append = |offset: u64, body: &[u8], hash: Option<String>| {
        let arg = json!({"cursor": {"session_id": id, "offset": offset}, "close": false, "content_hash": hash});
        call("upload_session/append_v2", &arg, body).expect("an answer")
    };
    let wrong = append(0, b"def", None);
    assert_eq!(wrong.json()["error"], json!({".tag": "incorrect_offset", "correct_offset": 3}));
    assert_eq!(append(3, b"def", Some(content_hash(b"xyz"))).json()["error_summary"], "content_hash_mismatch/..");
    let right = append(3, b"def", Some(content_hash(b"def")));
    assert_eq!((right.status, right.text()), (200, "null".to_owned()));
    assert_eq!(append(6, b"", None).status, 200);

    // A lost response: the file is committed all the same, and the
    // session is spent.
    dropbox.with(|s| s.faults.push_back(Fault::LoseResponse { route: "upload_session/finish" }));
    let finish = |offset: u64, body: &[u8]| {
        let commit = json!({"path": "/Videos/clip.mp4", "mode": "add", "autorename": false});
        call("upload_session/finish", &json!({"cursor": {"session_id": id, "offset": offset}, "commit": commit}), body)
    };
    assert!(finish(6, b"gh").is_err(), "the response was lost");
    assert_eq!(dropbox.files()["/Videos/clip.mp4"], b"abcdefgh");
    assert_eq!(finish(8, b"").expect("an answer").json()["error_summary"], "lookup_failed/not_found/..");
    let received: Vec<_> = dropbox.with(|s| {
        s.received
            .iter()
            .filter(|r| r.session.as_deref() == Some(&id))
            .map(|r| (r.route.clone(), r.offset, r.len, r.accepted))
            .collect()
    });
    let append_v2 = "upload_session/append_v2".to_owned();
    let finished = "upload_session/finish".to_owned();
    assert_eq!(
        received,
        [
            (append_v2.clone(), 0, 3, false),
            (append_v2.clone(), 3, 3, false),
            (append_v2.clone(), 3, 3, true),
            (append_v2, 6, 0, true),
            (finished.clone(), 6, 2, true),
            (finished, 8, 0, false)
        ]
    );

    // Scripted statuses and stalls; sessions that expire.
    dropbox.with(|s| s.faults.push_back(Fault::Status { route: "*", status: 429, retry_after: Some(7) }));
    let limited = call("upload_session/start", &json!({}), b"").expect("an answer");
    assert_eq!((limited.status, limited.headers["retry-after"].to_str().ok()), (429, Some("7")));
    assert_eq!(limited.json()["error"], json!({"reason": {".tag": "too_many_write_operations"}, "retry_after": 7}));
    dropbox.with(|s| s.faults.push_back(Fault::Stall { route: "upload_session/start" }));
    let bearer = format!("Bearer {token}");
    let headers: [(&str, &[u8]); 3] = [
        ("authorization", bearer.as_bytes()),
        ("dropbox-api-arg", b"{}"),
        ("content-type", b"application/octet-stream"),
    ];
    let stalled =
        post(&format!("{}/2/files/upload_session/start", dropbox.url), &headers, b"", Duration::from_millis(300));
    assert!(stalled.is_err_and(|e| e.is_timeout()));
    let open = call("upload_session/start", &json!({"close": true}), b"z").expect("an answer").json();
    dropbox.with(State::expire_sessions);
    let arg = json!({"cursor": {"session_id": open["session_id"], "offset": 1}, "close": true});
    assert_eq!(call("upload_session/append_v2", &arg, b"").expect("an answer").json()["error_summary"], "not_found/..");
    let routes = dropbox.with(|s| s.requests.clone());
    assert_eq!(routes.iter().filter(|r| r.ends_with("/upload_session/start")).count(), 4);
}
