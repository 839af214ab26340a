//! The identity platform: `/{tenant}/oauth2/v2.0/devicecode` and `/token`
//! (device code, authorization code with PKCE, refresh token), and what the
//! user does in the browser.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{
    AccessToken, Answer, CLIENT_ID, Call, Code, Device, DeviceStatus, Grant, Method, OneDrive, SCOPE, State,
    StatusCode, guid, json_answer, with_type,
};

/// How long an authorization code can be redeemed ("about 10 minutes").
const CODE_TTL: Duration = Duration::from_mins(10);
/// The tenant of personal Microsoft accounts.
const CONSUMERS_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
/// What user codes are made of.
const USER_CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// An OAuth error as the identity platform writes it: `{error,
/// error_description: "AADSTS{code}: …", error_codes, timestamp, trace_id,
/// correlation_id, error_uri}`.
pub(super) fn oauth_error(status: StatusCode, error: &str, code: u32, description: &str) -> Answer {
    let now = jiff::Timestamp::now();
    let timestamp = now.strftime("%Y-%m-%d %H:%M:%SZ").to_string();
    let (trace, correlation) =
        (guid(&format!("trace{now}")).to_lowercase(), guid(&format!("corr{now}")).to_lowercase());
    json_answer(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// A 400 OAuth error.
fn refuse(error: &str, code: u32, description: &str) -> Answer {
    oauth_error(StatusCode::BAD_REQUEST, error, code, description)
}

fn missing(name: &str) -> Answer {
    refuse("invalid_request", 900_144, &format!("The request body must contain the following parameter: '{name}'."))
}

/// A request below `/{tenant}/oauth2/v2.0/`; `route` is what follows.
pub(super) fn call(state: &mut State, call: &Call, tenant: &str, route: &str) -> Answer {
    match (route, call.method) {
        ("devicecode", &Method::POST) => match form(call) {
            Ok(form) => devicecode(state, &form, tenant),
            Err(refusal) => *refusal,
        },
        ("token", &Method::POST) => match form(call) {
            Ok(form) => token(state, &form, tenant),
            Err(refusal) => *refusal,
        },
        ("authorize", &Method::GET) => with_type(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body>The fake signs in with OneDrive::approve_browser.</body></html>",
        ),
        ("devicecode" | "token", _) => refuse("invalid_request", 900_561, "The endpoint only accepts POST requests."),
        _ => json_answer(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    }
}

/// A form body's parameters, each once, with a known public client and no
/// client secret.
fn form(call: &Call) -> Result<BTreeMap<String, String>, Box<Answer>> {
    let form_type = call.header("content-type").is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(Box::new(refuse(
            "invalid_request",
            900_144,
            "The request body must be application/x-www-form-urlencoded.",
        )));
    }
    let mut form = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(call.body) {
        if form.insert(name.clone().into_owned(), value.into_owned()).is_some() {
            return Err(Box::new(refuse(
                "invalid_request",
                9_002_313,
                &format!("Invalid request: the parameter '{name}' is repeated."),
            )));
        }
    }
    let Some(client_id) = form.get("client_id") else { return Err(Box::new(missing("client_id"))) };
    if client_id != CLIENT_ID {
        return Err(Box::new(refuse(
            "unauthorized_client",
            700_016,
            &format!("Application with identifier '{client_id}' was not found in the directory 'Microsoft Accounts'."),
        )));
    }
    if form.contains_key("client_secret") || form.contains_key("client_assertion") {
        return Err(Box::new(refuse(
            "invalid_client",
            700_025,
            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        )));
    }
    Ok(form)
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
fn devicecode(state: &mut State, form: &BTreeMap<String, String>, tenant: &str) -> Answer {
    let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) else { return missing("scope") };
    let device_code = state.unique("DAQABIQEAAAD--DLA3VO7QrddgJg7WevrfakeDc");
    let user_code = loop {
        let seed = state.unique("");
        let code: String =
            Sha256::digest(seed).iter().take(9).map(|b| char::from(USER_CODE_ALPHABET[usize::from(b % 32)])).collect();
        if !state.devices.values().any(|d| d.user_code == code) {
            break code;
        }
    };
    let order = state.next_number();
    let device = Device {
        user_code: user_code.clone(),
        client_id: CLIENT_ID.to_owned(),
        tenant: tenant.to_owned(),
        scope: scope.clone(),
        issued: Instant::now(),
        expires_in: state.device_expires_in,
        interval: state.device_interval,
        last_poll: None,
        status: DeviceStatus::Pending,
        order,
    };
    state.devices.insert(device_code.clone(), device);
    let verification_uri = format!("{}/devicelogin", state.base);
    json_answer(
        StatusCode::OK,
        &json!({
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": verification_uri,
            "expires_in": state.device_expires_in,
            "interval": state.device_interval,
            "message": format!(
                "To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to \
                 authenticate."
            ),
        }),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token`.
fn token(state: &mut State, form: &BTreeMap<String, String>, tenant: &str) -> Answer {
    match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:device_code") => poll(state, form, tenant),
        Some("authorization_code") => redeem(state, form),
        Some("refresh_token") => refresh(state, form),
        Some(other) => {
            refuse("unsupported_grant_type", 70_003, &format!("The app requested an unsupported grant type '{other}'."))
        }
        None => missing("grant_type"),
    }
}

/// A device's poll.
fn poll(state: &mut State, form: &BTreeMap<String, String>, tenant: &str) -> Answer {
    let Some(device_code) = form.get("device_code") else { return missing("device_code") };
    let now = Instant::now();
    let Some(device) = state.devices.get_mut(device_code).filter(|d| d.tenant == tenant) else {
        return refuse("bad_verification_code", 70_018, "The device_code was not recognized.");
    };
    if device.issued.elapsed() >= Duration::from_secs(device.expires_in) {
        return refuse("expired_token", 70_019, "Verification code expired. Have the user retry the sign-in.");
    }
    let too_soon = device.last_poll.is_some_and(|last| now.duration_since(last) < Duration::from_secs(device.interval));
    device.last_poll = Some(now);
    if too_soon || state.slow_downs > 0 {
        state.slow_downs = state.slow_downs.saturating_sub(1);
        device.interval += state.slow_down_increment;
        let interval = device.interval;
        return refuse(
            "slow_down",
            70_016,
            &format!("Polling too often: wait at least {interval} seconds between requests."),
        );
    }
    match device.status {
        DeviceStatus::Pending => refuse(
            "authorization_pending",
            70_016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        ),
        DeviceStatus::Declined => {
            refuse("authorization_declined", 65_004, "User declined to consent to access the app.")
        }
        DeviceStatus::Approved => {
            let device = state.devices.remove(device_code).expect("the device");
            tokens(state, &device.client_id, &device.scope, &device.scope)
        }
    }
}

/// Whether `text` is a PKCE code verifier or S256 challenge's form: 43 to
/// 128 unreserved characters (RFC 7636).
fn is_pkce(text: &str) -> bool {
    (43..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An authorization code's redemption. A failed attempt leaves the code.
fn redeem(state: &mut State, form: &BTreeMap<String, String>) -> Answer {
    let Some(code) = form.get("code") else { return missing("code") };
    let Some(granted) = state.codes.get(code).cloned() else {
        return refuse("invalid_grant", 70_000, "The provided value for the 'code' parameter is not valid.");
    };
    if granted.issued.elapsed() > CODE_TTL {
        state.codes.remove(code);
        return refuse("invalid_grant", 70_008, "The provided authorization code or refresh token has expired.");
    }
    let Some(redirect_uri) = form.get("redirect_uri") else { return missing("redirect_uri") };
    if *redirect_uri != granted.redirect_uri {
        return refuse(
            "invalid_grant",
            500_112,
            &format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting \
                 Authorization code.",
                granted.redirect_uri
            ),
        );
    }
    let Some(verifier) = form.get("code_verifier") else { return missing("code_verifier") };
    let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    if !is_pkce(verifier) || hashed != granted.challenge {
        return refuse(
            "invalid_grant",
            501_481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        );
    }
    state.codes.remove(code);
    tokens(state, &granted.client_id, &granted.scope, &granted.scope)
}

/// Scopes as compared: Graph's without their resource, in lowercase,
/// without `offline_access`, `openid`, `profile` and `email`.
fn scopes(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|s| s.trim_start_matches("https://graph.microsoft.com/").to_lowercase())
        .filter(|s| !["offline_access", "openid", "profile", "email"].contains(&s.as_str()))
        .collect()
}

fn has_scope(scope: &str, name: &str) -> bool {
    scope.split_whitespace().any(|s| s.eq_ignore_ascii_case(name))
}

/// A refresh: new tokens, the refresh token among them a new one.
fn refresh(state: &mut State, form: &BTreeMap<String, String>) -> Answer {
    let Some(old) = form.get("refresh_token") else { return missing("refresh_token") };
    let Some(grant) = state.refresh_tokens.get(old).filter(|g| g.client_id == CLIENT_ID).cloned() else {
        return refuse(
            "invalid_grant",
            700_082,
            "The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00Z and was \
             inactive for 90.00:00:00.",
        );
    };
    let asked = form.get("scope").cloned().unwrap_or_else(|| grant.scope.clone());
    let granted = scopes(&grant.scope);
    if let Some(beyond) = scopes(&asked).into_iter().find(|s| !granted.contains(s)) {
        return refuse(
            "invalid_grant",
            65_001,
            &format!("The user or administrator has not consented to use the application with scope '{beyond}'."),
        );
    }
    if !state.old_refresh_tokens_valid {
        state.refresh_tokens.remove(old);
    }
    tokens(state, &grant.client_id, &grant.scope, &asked)
}

fn issue_refresh(state: &mut State, client_id: &str, scope: &str) -> String {
    let token = state.unique("M.C540_BAY.0.U.-fake-refresh-");
    state.refresh_tokens.insert(token.clone(), Grant { client_id: client_id.into(), scope: scope.into() });
    token
}

/// A token answer: an access token for `scope`, and a new refresh token
/// for `granted` when it holds `offline_access`.
fn tokens(state: &mut State, client_id: &str, granted: &str, scope: &str) -> Answer {
    let access_token = state.unique("EwB4A-fake-access-");
    let ttl = Duration::from_secs(state.access_ttl);
    let access = AccessToken { issued: Instant::now(), ttl, expired: false, scope: scope.to_owned() };
    state.access_tokens.insert(access_token.clone(), access);
    let mut answer = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": state.access_ttl,
        "ext_expires_in": state.access_ttl,
        "access_token": access_token,
    });
    if has_scope(granted, "offline_access") {
        answer["refresh_token"] = issue_refresh(state, client_id, granted).into();
    }
    if has_scope(scope, "openid") {
        answer["id_token"] = id_token(client_id).into();
    }
    json_answer(StatusCode::OK, &answer)
}

/// An unsigned ID token for the test user.
fn id_token(client_id: &str) -> String {
    let encode = |value: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "aud": client_id,
        "iss": format!("https://login.microsoftonline.com/{CONSUMERS_TENANT}/v2.0"),
        "iat": now, "nbf": now, "exp": now + 3600,
        "name": "Test User", "preferred_username": "test.user@outlook.com",
        "oid": "00000000-0000-0000-66f3-3332eca7ea81", "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": CONSUMERS_TENANT, "ver": "2.0",
    });
    format!("{}.{}.", encode(json!({"typ": "JWT", "alg": "none"})), encode(claims))
}

impl OneDrive {
    /// What the user does in the browser: takes the authorize URL photosync
    /// printed (`{url}/{tenant}/oauth2/v2.0/authorize?client_id=…&
    /// response_type=code&redirect_uri=http://localhost:PORT/…&scope=…&
    /// code_challenge=…&code_challenge_method=S256&state=…`), checks it
    /// (panicking with the reason if a parameter is wrong), and returns where
    /// Microsoft would send the browser: `{redirect_uri}?code=…&state=…`.
    pub fn approve_browser(&self, authorize_url: &str) -> String {
        let url = url::Url::parse(authorize_url)
            .unwrap_or_else(|e| panic!("the authorize URL does not parse ({e}): {authorize_url}"));
        assert!(
            authorize_url.starts_with(&format!("{}/", self.url)),
            "the authorize URL is not below the login_url {}/: {authorize_url}",
            self.url
        );
        let segments: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
        assert!(
            segments.len() == 4 && !segments[0].is_empty() && segments[1..] == ["oauth2", "v2.0", "authorize"],
            "not a /{{tenant}}/oauth2/v2.0/authorize URL: {authorize_url}"
        );
        let mut params = BTreeMap::new();
        for (name, value) in url.query_pairs() {
            let again = params.insert(name.clone().into_owned(), value.into_owned());
            assert!(again.is_none(), "the authorize URL repeats {name}: {authorize_url}");
        }
        let param = |name: &str| params.get(name).map(String::as_str);
        for (name, expected) in [("client_id", CLIENT_ID), ("response_type", "code"), ("code_challenge_method", "S256")]
        {
            assert_eq!(param(name), Some(expected), "the authorize URL's {name} (URL: {authorize_url})");
        }
        assert!(
            param("response_mode").is_none_or(|m| m == "query"),
            "the authorize URL's response_mode must be query (or absent) for a loopback listener: {authorize_url}"
        );
        let scope = param("scope").filter(|s| !s.trim().is_empty());
        let scope = scope.unwrap_or_else(|| panic!("the authorize URL has no scope: {authorize_url}")).to_owned();
        let state_param = param("state").filter(|s| !s.is_empty());
        let state_param = state_param.unwrap_or_else(|| panic!("the authorize URL has no state: {authorize_url}"));
        let challenge = param("code_challenge").unwrap_or_default();
        assert!(
            challenge.len() == 43 && is_pkce(challenge) && !challenge.contains(['.', '~']),
            "the code_challenge is not an unpadded base64url SHA-256 (43 characters): {challenge:?}"
        );
        let redirect_uri = param("redirect_uri").unwrap_or_else(|| panic!("no redirect_uri: {authorize_url}"));
        let mut redirect = url::Url::parse(redirect_uri)
            .unwrap_or_else(|e| panic!("the redirect_uri does not parse ({e}): {redirect_uri}"));
        assert!(
            redirect.scheme() == "http"
                && matches!(redirect.host_str(), Some("localhost" | "127.0.0.1"))
                && redirect.port().is_some(),
            "the redirect_uri is not a loopback address with a port (http://localhost:PORT/…): {redirect_uri}"
        );
        let challenge = challenge.to_owned();
        let code = self.with(|state| {
            let code = state.unique("M.C540_BAY.2.U.fake-code-");
            let granted = Code {
                client_id: CLIENT_ID.into(),
                challenge,
                redirect_uri: redirect_uri.to_owned(),
                scope,
                issued: Instant::now(),
            };
            state.codes.insert(code.clone(), granted);
            code
        });
        redirect.query_pairs_mut().append_pair("code", &code).append_pair("state", state_param);
        redirect.to_string()
    }

    /// The user enters `user_code` at the verification page and approves.
    pub fn approve_device(&self, user_code: &str) {
        self.settle_device(user_code, DeviceStatus::Approved);
    }

    /// The user enters `user_code` and declines.
    pub fn decline_device(&self, user_code: &str) {
        self.settle_device(user_code, DeviceStatus::Declined);
    }

    fn settle_device(&self, user_code: &str, status: DeviceStatus) {
        self.with(|state| {
            let known: Vec<String> = state.devices.values().map(|d| d.user_code.clone()).collect();
            let device = state.devices.values_mut().find(|d| d.user_code.eq_ignore_ascii_case(user_code.trim()));
            let device =
                device.unwrap_or_else(|| panic!("no device sign-in has the code {user_code:?} (codes: {known:?})"));
            assert!(
                device.issued.elapsed() < Duration::from_secs(device.expires_in),
                "the device code for {user_code} has expired"
            );
            assert_eq!(device.status, DeviceStatus::Pending, "the device sign-in {user_code} was settled already");
            device.status = status;
        });
    }

    /// The user code of the latest device sign-in, while it waits for the
    /// user.
    pub fn pending_user_code(&self) -> Option<String> {
        self.with(|state| {
            let latest = state.devices.values().max_by_key(|d| d.order)?;
            let waiting = latest.status == DeviceStatus::Pending
                && latest.issued.elapsed() < Duration::from_secs(latest.expires_in);
            waiting.then(|| latest.user_code.clone())
        })
    }

    /// A refresh token for [`SCOPE`], as if the user had signed in.
    pub fn grant(&self) -> String {
        self.with(|state| issue_refresh(state, CLIENT_ID, SCOPE))
    }
}
