//! The REST API (process-compose v1.122.0 routes, JSON shapes and errors),
//! over TCP or a unix socket, with hyper 1.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::state::ProcessStateJson;
use crate::supervisor::{Cmd, Runner};
use crate::warn;

/// The header process-compose reads the API token from.
pub const TOKEN_HEADER: &str = "X-PC-Token-Key";

/// How long in-flight requests may take once the server is shutting down.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Api {
    pub runner: Arc<Runner>,
    /// When set, every route requires `X-PC-Token-Key` to equal it.
    pub token: Option<String>,
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Listener {
    async fn accept(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Listener::Tcp(l) => Box::new(l.accept().await?.0),
            Listener::Unix(l, _) => Box::new(l.accept().await?.0),
        })
    }
}

/// Serves until `shutdown` completes, then lets in-flight requests finish
/// (up to a short timeout) and removes the unix socket file.
pub async fn serve(listener: Listener, api: Arc<Api>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok(io) => {
                    let api = api.clone();
                    let service = service_fn(move |req| handle(api.clone(), req));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Err(err) => {
                    warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

type Resp = Response<Full<Bytes>>;

async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    if let Some(token) = &api.token {
        let given = req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
        if given != Some(token.as_bytes()) {
            return Ok(empty(StatusCode::UNAUTHORIZED));
        }
    }
    let segments: Option<Vec<String>> = req
        .uri()
        .path()
        .strip_prefix('/')
        .unwrap_or_default()
        .split('/')
        .map(percent_decode)
        .collect();
    let Some(segments) = segments else {
        return Ok(not_found());
    };
    if segments.iter().any(String::is_empty) {
        return Ok(not_found());
    }
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let runner = &api.runner;
    let method = req.method();

    Ok(match (method, segments.as_slice()) {
        (&Method::GET, ["live"]) => ok(&json!({"status": "alive"})),
        (&Method::GET, ["processes"]) => {
            // A typed struct, not `json!`: a `Value` would sort the state's keys.
            #[derive(Serialize)]
            struct ProcessesState {
                data: Vec<ProcessStateJson>,
            }
            let data = runner.processes().map(|p| p.snapshot()).collect();
            ok(&ProcessesState { data })
        }
        (&Method::GET, ["process", name]) => match runner.get(name) {
            Some(proc) => ok(&proc.snapshot()),
            None => error(format!(
                "can't get state of process {name}: no such process"
            )),
        },
        (&Method::PATCH, ["process", "stop", name]) => match runner.get(name) {
            Some(proc) => name_or_error(name, proc.request(Cmd::Stop).await),
            None => error(format!("process {name} does not exist")),
        },
        (&Method::POST, ["process", "start", name]) => match runner.get(name) {
            Some(proc) => name_or_error(name, proc.request(Cmd::Start).await),
            None => error(format!("no such process: {name}")),
        },
        (&Method::POST, ["process", "restart", name]) => match runner.get(name) {
            Some(proc) => name_or_error(name, proc.request(Cmd::Restart).await),
            None => error(format!("no such process: {name}")),
        },
        (&Method::POST, ["project", "stop"]) => {
            runner.request_project_stop();
            ok(&json!({"status": "stopped"}))
        }
        _ => not_found(),
    })
}

fn name_or_error(name: &str, result: Result<(), String>) -> Resp {
    match result {
        Ok(()) => ok(&json!({ "name": name })),
        Err(message) => error(message),
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Resp {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        "application/json; charset=utf-8"
            .parse()
            .expect("valid header"),
    );
    resp
}

fn ok(body: &impl Serialize) -> Resp {
    json_response(StatusCode::OK, body)
}

fn error(message: String) -> Resp {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": message }))
}

fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// gin's default NoRoute answer.
fn not_found() -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"404 page not found")));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut()
        .insert(CONTENT_TYPE, "text/plain".parse().expect("valid header"));
    resp
}

/// Decodes `%XX` escapes (process names containing `/` arrive as `%2F`).
/// `None` for a malformed escape or invalid UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("web").as_deref(), Some("web"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a%20b%2f").as_deref(), Some("a b/"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
