//! The HTTP side: the server loop, recording each request, scripted
//! faults, routing, and the answers' shapes.

use std::sync::Mutex;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::json;

pub(super) use crate::fake_http::{Answer, json_answer, with_type};
use crate::fake_http::{body_of, lock};

use super::{Fault, Received, State, graph, guid, identity, upload};

/// A request, as the routes see it.
pub struct Call<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

impl Call<'_> {
    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// How a request shows in [`State::requests`].
fn describe(method: &Method, path: &str) -> String {
    if path.starts_with("/upload/") { format!("{method} upload") } else { format!("{method} {path}") }
}

/// Records the request, then answers it, unless a fault says otherwise. An
/// `Err` makes hyper close the connection without an answer.
pub(super) async fn handle(shared: &Mutex<State>, request: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let body = body_of(body).await;
    let (fault, answer) = {
        let mut state = lock(shared);
        state.requests.push(describe(&parts.method, &path));
        let cut_off = body.is_err();
        let body = body.unwrap_or_else(|partial| partial);
        if let Some(session) = path.strip_prefix("/upload/").filter(|_| parts.method == Method::PUT) {
            let range = parts.headers.get("content-range").and_then(|v| v.to_str().ok());
            state.received.push(Received {
                session: session.to_owned(),
                start: range.and_then(upload::parse_range).map_or(0, |(start, _, _)| start),
                len: body.len() as u64,
                accepted: false,
                authorization: parts.headers.contains_key(hyper::header::AUTHORIZATION),
            });
        }
        if path.ends_with("/oauth2/v2.0/token") && parts.method == Method::POST {
            let grant =
                url::form_urlencoded::parse(&body).find(|(k, _)| k == "grant_type").map(|(_, v)| v.into_owned());
            if grant.as_deref() == Some("refresh_token") {
                state.refreshes += 1;
            }
            state.token_requests.push(grant.unwrap_or_default());
        }
        if cut_off {
            return Err(std::io::Error::other("the request's body was cut off"));
        }
        let fault = state.faults.iter().position(|f| f.matches(&path)).and_then(|i| state.faults.remove(i));
        let answer = match fault {
            Some(Fault::Status { .. } | Fault::Stall { .. }) => None,
            None | Some(Fault::LoseResponse { .. }) => {
                let call =
                    Call { method: &parts.method, headers: &parts.headers, path: &path, query: &query, body: &body };
                Some(respond(&mut state, &call))
            }
        };
        (fault, answer)
    };
    match (fault, answer) {
        (Some(Fault::Status { status, retry_after, .. }), _) => Ok(scripted(&path, status, retry_after)),
        (Some(Fault::Stall { .. }), _) => std::future::pending().await,
        (Some(Fault::LoseResponse { .. }), _) => Err(std::io::Error::other("scripted: the response is lost")),
        (None, answer) => Ok(answer.expect("an answer")),
    }
}

fn respond(state: &mut State, call: &Call) -> Answer {
    let path = call.path;
    if path.starts_with("/v1.0/") {
        return graph::call(state, call);
    }
    if let Some(rest) = path.strip_prefix("/upload/") {
        return upload::upload_url(state, call, rest);
    }
    if let Some(token) = path.strip_prefix("/download/") {
        return graph::download(state, call, token);
    }
    if path == "/devicelogin" {
        return with_type(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Enter code (the tests call OneDrive::approve_device)",
        );
    }
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    if let (Some(tenant), Some(route)) = (segments.next(), segments.next())
        && !tenant.is_empty()
        && route.starts_with("oauth2/v2.0/")
    {
        return identity::call(state, call, tenant, &route["oauth2/v2.0/".len()..]);
    }
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found.", None)
}

/// A [`Fault::Status`] answer.
fn scripted(path: &str, status: u16, retry_after: Option<u64>) -> Answer {
    let status = StatusCode::from_u16(status).expect("a status code");
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut answer = if path.contains("/oauth2/v2.0/") {
        identity::oauth_error(status, "temporarily_unavailable", 50_033, &format!("{reason}. Retry the request."))
    } else {
        match status.as_u16() {
            429 | 503 => {
                graph_error(status, "activityLimitReached", "The request has been throttled", Some("throttledRequest"))
            }
            401 => {
                graph_error(status, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.", None)
            }
            404 => graph_error(status, "itemNotFound", "The resource could not be found.", None),
            409 => graph_error(status, "nameAlreadyExists", "The specified item name already exists.", None),
            416 => graph_error(status, "invalidRange", "The specified byte range is invalid or unavailable.", None),
            507 => graph_error(status, "quotaLimitReached", "Insufficient Space Available", None),
            _ => graph_error(status, "generalException", reason, None),
        }
    };
    if let Some(seconds) = retry_after {
        answer.headers_mut().insert("retry-after", HeaderValue::from(seconds));
    }
    answer
}

pub(super) fn empty(status: StatusCode) -> Answer {
    let mut answer = hyper::Response::new(crate::fake_http::Whole::new(bytes::Bytes::new()));
    *answer.status_mut() = status;
    answer
}

/// A Graph error: `{"error": {code, message, innerError}}`, the detailed
/// code (if any) in `innerError`.
pub(super) fn graph_error(status: StatusCode, code: &str, message: &str, detail: Option<&str>) -> Answer {
    let now = jiff::Timestamp::now();
    let mut inner =
        json!({"date": now.strftime("%Y-%m-%dT%H:%M:%S").to_string(), "request-id": guid(&now.to_string())});
    if let Some(detail) = detail {
        inner["code"] = detail.into();
    }
    json_answer(status, &json!({"error": {"code": code, "message": message, "innerError": inner}}))
}
