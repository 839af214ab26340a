//! Sign-in (the code flow with PKCE, no redirect URI), the token endpoint,
//! and the bearer check of `/2/` routes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{
    ACCOUNT_ID, AccessToken, Answer, CLIENT_ID, Code, Dropbox, Grant, HeaderMap, SCOPE, State, StatusCode, UID,
    json_answer, text,
};

/// Whether `text` is a PKCE code verifier or S256 challenge's form: 43 to
/// 128 unreserved characters (RFC 7636).
fn is_pkce(text: &str) -> bool {
    (43..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl Dropbox {
    /// What the user does in the browser: takes the authorize URL photosync
    /// printed (`…/oauth2/authorize?client_id=…&response_type=code&
    /// token_access_type=offline&code_challenge=…&code_challenge_method=S256`),
    /// checks it (panicking with the reason if a parameter is wrong, or if
    /// it has a `redirect_uri`), and returns the one-time code Dropbox would
    /// show.
    pub fn approve(&self, authorize_url: &str) -> String {
        let url = url::Url::parse(authorize_url)
            .unwrap_or_else(|e| panic!("the authorize URL does not parse ({e}): {authorize_url}"));
        assert!(url.path().ends_with("/oauth2/authorize"), "not an authorize URL: {authorize_url}");
        let mut params = BTreeMap::new();
        for (name, value) in url.query_pairs() {
            let again = params.insert(name.clone().into_owned(), value.into_owned());
            assert!(again.is_none(), "the authorize URL repeats {name}: {authorize_url}");
        }
        let param = |name: &str| params.get(name).map(String::as_str);
        for (name, expected) in [
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("token_access_type", "offline"),
            ("code_challenge_method", "S256"),
        ] {
            assert_eq!(param(name), Some(expected), "the authorize URL's {name} (URL: {authorize_url})");
        }
        assert!(
            param("redirect_uri").is_none(),
            "the authorize URL has a redirect_uri, so Dropbox would redirect instead of showing a code: {authorize_url}"
        );
        let challenge = param("code_challenge").unwrap_or_default();
        assert!(
            challenge.len() == 43 && is_pkce(challenge) && !challenge.contains(['.', '~']),
            "the code_challenge is not an unpadded base64url SHA-256 (43 characters): {challenge:?}"
        );
        let scope = param("scope").unwrap_or(SCOPE).to_owned();
        let challenge = challenge.to_owned();
        self.with(|state| {
            let code = state.unique("fake-code-");
            state.codes.insert(code.clone(), Code { client_id: CLIENT_ID.into(), challenge, scope });
            code
        })
    }

    /// A refresh token, as if the user had signed in (for tests that skip
    /// the sign-in).
    pub fn grant(&self) -> String {
        self.with(|state| issue_refresh(state, CLIENT_ID, SCOPE))
    }
}

fn issue_refresh(state: &mut State, client_id: &str, scope: &str) -> String {
    let token = state.unique("fake-refresh-");
    state.refresh_tokens.insert(token.clone(), Grant { client_id: client_id.into(), scope: scope.into() });
    token
}

fn issue_access(state: &mut State) -> String {
    let token = state.unique("sl.fake-");
    let ttl = Duration::from_secs(state.access_ttl);
    state.access_tokens.insert(token.clone(), AccessToken { issued: Instant::now(), ttl, expired: false });
    token
}

/// An OAuth error: 400 `{error, error_description}`.
fn oauth_error(error: &str, description: &str) -> Answer {
    json_answer(StatusCode::BAD_REQUEST, &json!({"error": error, "error_description": description}))
}

/// `POST /oauth2/token` (a form body).
pub(super) fn token(state: &mut State, headers: &HeaderMap, body: &[u8]) -> Answer {
    let form_type =
        headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded"));
    if !form_type {
        return oauth_error("invalid_request", "the body must be application/x-www-form-urlencoded");
    }
    let mut form = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if form.insert(name.clone().into_owned(), value.into_owned()).is_some() {
            return oauth_error("invalid_request", &format!("repeated parameter {name}"));
        }
    }
    let param = |name: &str| form.get(name).map(String::as_str);
    let Some(client_id) = param("client_id") else {
        return oauth_error("invalid_request", "No auth function available for given request");
    };
    if client_id != CLIENT_ID || param("client_secret").is_some() {
        return oauth_error("invalid_client", "Invalid client_id or client_secret");
    }
    match param("grant_type") {
        Some("authorization_code") => {
            // Codes are single-use: any attempt spends one.
            let code = param("code").and_then(|c| state.codes.remove(c)).filter(|c| c.client_id == client_id);
            let Some(code) = code else { return oauth_error("invalid_grant", "code doesn't exist or has expired") };
            if param("redirect_uri").is_some() {
                return oauth_error("invalid_grant", "redirect_uri mismatch");
            }
            let verifier = param("code_verifier").unwrap_or_default();
            let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
            if !is_pkce(verifier) || hashed != code.challenge {
                return oauth_error("invalid_grant", "invalid code verifier");
            }
            let refresh_token = issue_refresh(state, client_id, &code.scope);
            let access_token = issue_access(state);
            json_answer(
                StatusCode::OK,
                &json!({"access_token": access_token, "token_type": "bearer", "expires_in": state.access_ttl,
                    "refresh_token": refresh_token, "scope": code.scope, "uid": UID, "account_id": ACCOUNT_ID}),
            )
        }
        Some("refresh_token") => {
            let grant = param("refresh_token").and_then(|t| state.refresh_tokens.get(t));
            if grant.is_none_or(|g| g.client_id != client_id) {
                return oauth_error("invalid_grant", "refresh token is invalid or revoked");
            }
            let access_token = issue_access(state);
            json_answer(
                StatusCode::OK,
                &json!({"access_token": access_token, "token_type": "bearer", "expires_in": state.access_ttl}),
            )
        }
        Some(other) => oauth_error("unsupported_grant_type", &format!("grant_type {other:?} is not supported")),
        None => oauth_error("invalid_request", "missing grant_type"),
    }
}

/// The `Authorization: Bearer` check of a `/2/` route: the refusal of a
/// missing or malformed header (bad input, 400), or of an unknown or expired
/// token (a 401 `AuthError`); `None` for a good token.
pub(super) fn bearer_refusal(state: &State, headers: &HeaderMap, function: &str) -> Option<Answer> {
    let bad = |detail: String| {
        text(StatusCode::BAD_REQUEST, &format!("Error in call to API function \"{function}\": {detail}"))
    };
    let Some(value) = headers.get("authorization") else {
        return Some(bad("Must provide HTTP header \"Authorization\" or URL parameter \"authorization\".".into()));
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    let Some(token) = value.strip_prefix("Bearer ") else {
        return Some(bad(format!(
            "Invalid authorization value in HTTP header \"Authorization\": \"{value}\". Expecting \"Bearer \
             <oauth2-access-token>\"."
        )));
    };
    let refusal = |tag: &str| {
        json_answer(StatusCode::UNAUTHORIZED, &json!({"error_summary": format!("{tag}/.."), "error": {".tag": tag}}))
    };
    match state.access_tokens.get(token) {
        None => Some(refusal("invalid_access_token")),
        Some(access) if access.is_expired() => Some(refusal("expired_access_token")),
        Some(_) => None,
    }
}
