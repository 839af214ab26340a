//! Signing in with a browser on this machine (RFC 8252 §7.3): photosync
//! listens on 127.0.0.1 at a port the system picks, sends the user to the
//! service with `http://localhost:PORT/` as the redirect, and takes the
//! code from the request the browser makes there. The `state` parameter
//! (RFC 6749 §10.12) ties the answer to this sign-in; PKCE proves the code
//! is exchanged by whoever asked for it.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::Grant;
use super::SignIn;
use super::pkce::{Pkce, random_token};
use super::store::Place;

/// How long the user has to finish in the browser.
const PATIENCE: Duration = Duration::from_mins(10);

/// A browser sign-in waiting for the browser to come back.
pub struct Browser {
    /// The address the user opens.
    pub url: url::Url,
    /// The port photosync listens on (for an SSH tunnel from a machine
    /// with a browser).
    pub port: u16,
    listener: tokio::net::TcpListener,
    /// The same port on `::1`, where a browser may take `localhost` to be.
    listener_v6: Option<tokio::net::TcpListener>,
    redirect_uri: String,
    state: String,
    pkce: Pkce,
}

impl SignIn {
    /// Starts listening and makes the address to open.
    pub async fn browser_start(&self) -> Result<Browser, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1 for the browser: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        // RFC 8252 §8.3: `localhost` may resolve to either address.
        let listener_v6 = tokio::net::TcpListener::bind(("::1", port)).await.ok();
        let redirect_uri = format!("http://localhost:{port}/");
        let pkce = Pkce::new().map_err(|e| format!("cannot draw a random sign-in secret: {e}"))?;
        let state = random_token(24).map_err(|e| format!("cannot draw a random sign-in secret: {e}"))?;
        let mut url = self.authorize.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("redirect_uri", &redirect_uri);
            if let Some(scope) = &self.scope {
                query.append_pair("scope", scope);
            }
            query
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", &state);
        }
        Ok(Browser { url, port, listener, listener_v6, redirect_uri, state, pkce })
    }

    /// Waits for the browser, then exchanges the code and keeps the grant.
    pub async fn browser_finish(&self, browser: Browser) -> Result<(Grant, Place), String> {
        let code = tokio::time::timeout(PATIENCE, wait_for_code(&browser))
            .await
            .map_err(|_| "the browser did not come back within 10 minutes; run the command again".to_owned())??;
        self.exchange(&code, &browser.pkce, Some(&browser.redirect_uri)).await
    }
}

/// How long one connection may take to send its request (a browser's
/// spare connection, a port scan: none of them may hold up the sign-in).
const REQUEST_PATIENCE: Duration = Duration::from_secs(5);

/// Answers requests to the listeners until one carries this sign-in's
/// answer; returns its code.
async fn wait_for_code(browser: &Browser) -> Result<String, String> {
    loop {
        let accepted = match &browser.listener_v6 {
            Some(v6) => tokio::select! {
                a = browser.listener.accept() => a,
                a = v6.accept() => a,
            },
            None => browser.listener.accept().await,
        };
        let (mut stream, _) = accepted.map_err(|e| format!("the browser's request failed: {e}"))?;
        let Ok(head) = tokio::time::timeout(REQUEST_PATIENCE, read_head(&mut stream)).await else { continue };
        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
        let target = line.split(' ').nth(1).unwrap_or_default();
        let parsed = url::Url::parse(&format!("http://localhost{target}")).ok();
        let pairs: Vec<(String, String)> =
            parsed.iter().flat_map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned()))).collect();
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        if get("state").as_deref() != Some(browser.state.as_str()) {
            // A favicon, a stray visit, or an answer to another sign-in.
            let _ = respond(&mut stream, "404 Not Found", "Not the photosync sign-in.").await;
            continue;
        }
        if let Some(code) = get("code") {
            let _ = respond(
                &mut stream,
                "200 OK",
                "photosync has the answer: you can close this window and go back to the terminal.",
            )
            .await;
            return Ok(code);
        }
        let error = get("error").unwrap_or_else(|| "no code".into());
        let description = get("error_description").unwrap_or_default();
        let _ = respond(&mut stream, "200 OK", "photosync was not signed in. You can close this window.").await;
        let said: String = format!("{error} {description}").chars().filter(|c| !c.is_control()).take(300).collect();
        return Err(format!("the sign-in was not completed: {}", said.trim()));
    }
}

/// A request's head (up to its blank line, at most 16 KiB).
async fn read_head(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    head
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, text: &str) -> std::io::Result<()> {
    let body = format!("<!doctype html><title>photosync</title><p>{text}</p>\n");
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}
