//! What the test tree's fake services share: a hyper server on 127.0.0.1
//! on its own thread, whole response bodies, reading a request's body (or
//! what came before the connection broke), and answers with a type.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use crate::harness::ServerThread;

/// A whole response body.
pub struct Whole(Option<bytes::Bytes>);

impl Whole {
    pub fn new(bytes: impl Into<bytes::Bytes>) -> Whole {
        let bytes = bytes.into();
        Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl hyper::body::Body for Whole {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<bytes::Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |data| data.len() as u64))
    }
}

/// A response.
pub type Answer = Response<Whole>;

/// The whole body, or the part that came before the connection broke.
pub async fn body_of(mut body: Incoming) -> Result<Vec<u8>, Vec<u8>> {
    use hyper::body::Body as _;
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(_) => return Err(bytes),
        }
    }
    Ok(bytes)
}

/// An answer of `content_type` with `body`.
pub fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<bytes::Bytes>) -> Answer {
    let mut answer = Response::new(Whole::new(body));
    *answer.status_mut() = status;
    answer.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}

/// A JSON answer.
pub fn json_answer(status: StatusCode, body: &Value) -> Answer {
    with_type(status, "application/json", body.to_string())
}

/// The state, even after a test thread panicked holding it.
pub fn lock<S>(state: &Mutex<S>) -> MutexGuard<'_, S> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a server on its own thread answering every request with
/// `handle(state, request)` (an `Err` closes the connection without an
/// answer); returns it and its base address.
pub fn start<S, F, Fut>(state: &Arc<Mutex<S>>, handle: F) -> (ServerThread, String)
where
    S: Send + 'static,
    F: Fn(Arc<Mutex<S>>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, std::io::Error>> + Send + 'static,
{
    let state = Arc::clone(state);
    let (server, addr) = ServerThread::start(move |ready, mut stopped| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ready.send(listener.local_addr().expect("addr")).expect("send addr");
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((socket, _)) = accepted else { continue };
                    let (state, handle) = (Arc::clone(&state), handle.clone());
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        handle(Arc::clone(&state), request)
                    });
                    tokio::spawn(async move {
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = builder.serve_connection(TokioIo::new(socket), service).await;
                    });
                }
                _ = &mut stopped => break,
            }
        }
    });
    (server, format!("http://{addr}"))
}
