//! A fault-injecting HTTP proxy for the S3 tests. It listens on 127.0.0.1
//! in front of the S3 server and, request by request as a script says,
//! passes the request on, answers it itself (a 5xx, a 429 with
//! `Retry-After`, an S3 error such as `NoSuchUpload`), cuts the connection
//! while the body is being sent, says nothing for a while (a stall), or
//! passes it on and alters the answer. Every request is logged with the
//! time it arrived and what was done to it, so a test can check what the
//! client did next (that it waited out a `Retry-After`, say).
//!
//! One request per connection: the proxy asks the server to close after
//! each answer, and so tells the client.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// `answer` with `Connection: close` among its headers: the proxy closes
/// every connection after one answer, and a client that was not told so
/// may send its next request on it as it closes (a race that shows under
/// load as "connection closed before message completed").
fn close_after(answer: Vec<u8>) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return answer };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    if head.lines().any(|line| line.starts_with("connection:") && line.contains("close")) {
        return answer;
    }
    let mut closed = answer[..end + 2].to_vec();
    closed.extend_from_slice(b"Connection: close\r\n");
    closed.extend_from_slice(&answer[end + 2..]);
    closed
}

/// What the proxy does with one request.
#[derive(Clone)]
pub enum Fault {
    /// Pass it on untouched.
    Pass,
    /// Answer it with this status and S3 error code (and `Retry-After`).
    Answer { status: u16, code: &'static str, retry_after: Option<u64> },
    /// Read the head and half the body, then drop the connection.
    ResetMidBody,
    /// Read it all, then say nothing for this long, then close.
    Stall(Duration),
    /// Pass it on, and change the answer (same length) before the client sees it.
    Rewrite(fn(&mut [u8])),
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Answer { .. } => "answer",
            Self::ResetMidBody => "reset",
            Self::Stall(_) => "stall",
            Self::Rewrite(_) => "rewrite",
        }
    }
}

/// A request as the script sees it.
pub struct Request {
    /// `PUT`, `GET`…
    pub method: String,
    /// Path and query.
    pub target: String,
}

impl Request {
    /// An `UploadPart`.
    pub fn is_part(&self) -> bool {
        self.method == "PUT" && self.target.contains("uploadId=")
    }

    /// A `CompleteMultipartUpload`.
    pub fn is_complete(&self) -> bool {
        self.method == "POST" && self.target.contains("uploadId=")
    }
}

/// Whether the query of `target` has the parameter `name`.
pub fn has_param(target: &str, name: &str) -> bool {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query.split('&').any(|kv| kv.split('=').next() == Some(name))
}

/// Decides each request's fate.
pub type Script = Box<dyn Fn(&Request) -> Fault + Send + Sync>;

/// One logged request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub target: String,
    pub fault: &'static str,
    /// The `Retry-After` the proxy answered with, if any.
    pub retry_after: Option<u64>,
}

impl Seen {
    /// What a retry of this request has in common with it: the method, the
    /// path and the part number (signatures and dates in the query differ).
    pub fn operation(&self) -> String {
        let (path, query) = self.target.split_once('?').unwrap_or((&self.target, ""));
        let part = query.split('&').find(|kv| kv.starts_with("partNumber=")).unwrap_or_default();
        let multipart =
            if has_param(&self.target, "uploadId") || has_param(&self.target, "uploads") { "multipart" } else { "" };
        format!("{} {path} {part} {multipart}", self.method)
    }
}

/// A running proxy.
pub struct Proxy {
    pub endpoint: String,
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    address: std::net::SocketAddr,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://host:port`).
    pub fn start(upstream: &str, script: Script) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (upstream, log, script) = (upstream.clone(), Arc::clone(&log), Arc::clone(&script));
                    std::thread::spawn(move || {
                        let _ = serve(stream, &upstream, &log, script.as_ref());
                    });
                }
            });
        }
        Proxy { endpoint: format!("http://{address}"), log, stop, address }
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}

/// The head of an HTTP/1.1 request.
pub struct Head {
    pub method: String,
    pub target: String,
    /// The header lines as sent.
    pub lines: Vec<String>,
    /// `Content-Length` (bodies without one are not supported).
    pub length: usize,
}

impl Head {
    /// A header's value (the first of that name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads a request's head; `None` when the connection closes first.
pub fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        reader.read_until(b'\n', &mut raw)?;
        if raw.len() == before {
            return Ok(None);
        }
        if raw.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
    let lines: Vec<String> = lines.filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let mut head = Head { method: method.to_owned(), target: target.to_owned(), lines, length: 0 };
    assert!(head.header("transfer-encoding").is_none(), "only bodies with a Content-Length are handled");
    head.length = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Some(head))
}

/// Handles one connection: one request.
fn serve(
    client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<Seen>>,
    script: &(dyn Fn(&Request) -> Fault + Send + Sync),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(head) = read_head(&mut reader)? else { return Ok(()) };
    let (method, target, length) = (head.method.as_str(), head.target.as_str(), head.length);
    // The proxy speaks for the connection itself.
    let headers: Vec<&String> =
        head.lines.iter().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    let fault = script(&Request { method: method.to_owned(), target: target.to_owned() });
    log.lock().unwrap_or_else(PoisonError::into_inner).push(Seen {
        at: Instant::now(),
        method: method.to_owned(),
        target: target.to_owned(),
        fault: fault.name(),
        retry_after: if let Fault::Answer { retry_after, .. } = fault { retry_after } else { None },
    });

    let mut body = vec![0u8; length];
    if let Fault::ResetMidBody = fault {
        reader.read_exact(&mut body[..length / 2])?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    reader.read_exact(&mut body)?;
    let mut client = client;
    match fault {
        Fault::Answer { status, code, retry_after } => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            let retry = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
            write!(
                client,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{xml}",
                xml.len()
            )?;
        }
        Fault::Stall(how_long) => std::thread::sleep(how_long),
        Fault::Pass | Fault::Rewrite(_) => {
            let address = upstream.to_socket_addrs()?.next().expect("upstream address");
            let mut server = TcpStream::connect(address)?;
            let mut forwarded = format!("{method} {target} HTTP/1.1\r\n");
            for header in &headers {
                forwarded.push_str(header);
                forwarded.push_str("\r\n");
            }
            forwarded.push_str("Connection: close\r\n\r\n");
            server.write_all(forwarded.as_bytes())?;
            server.write_all(&body)?;
            let mut answer = Vec::new();
            server.read_to_end(&mut answer)?;
            if let Fault::Rewrite(change) = fault {
                change(&mut answer);
            }
            client.write_all(&close_after(answer))?;
        }
        Fault::ResetMidBody => unreachable!("handled above"),
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
