//! The REST API (process-compose v1.122.0 routes, JSON shapes and errors)
//! and the WebSocket state stream, over TCP or a unix socket, with hyper 1.

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
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::{ProcessStateJson, rfc3339_nano};
use crate::supervisor::{Cmd, Runner};
use crate::version::Version;
use crate::{warn, ws};

/// The header process-compose reads the API token from.
pub const TOKEN_HEADER: &str = "X-PC-Token-Key";

/// How long in-flight requests, and state streams sending their last
/// frames, may take once the server is shutting down.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Api {
    pub runner: Arc<Runner>,
    /// When set, every route requires `X-PC-Token-Key` to equal it.
    pub token: Option<String>,
    /// The release being emulated: decides whether the state stream exists.
    pub version: Version,
    /// What `GET /project/state` reports besides the processes.
    pub project: ProjectInfo,
    /// The state streams' writer tasks.
    pub streams: TaskTracker,
}

/// The static part of `GET /project/state`.
pub struct ProjectInfo {
    pub file_names: Vec<String>,
    pub project_name: String,
    pub user_name: String,
    pub started: chrono::DateTime<chrono::Local>,
    pub started_at: std::time::Instant,
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

/// Serves until `shutdown` completes, then lets in-flight requests and state
/// streams finish (up to a short timeout) and removes the unix socket file.
pub async fn serve(listener: Listener, api: Arc<Api>, shutdown: impl Future<Output = ()>) {
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok(io) => {
                    let api = api.clone();
                    let stop = stop.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(api.clone(), req));
                        let conn = http1::Builder::new()
                            .serve_connection(TokioIo::new(io), service)
                            .with_upgrades();
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            () = stop.cancelled() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
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
    stop.cancel();
    connections.close();
    api.streams.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        connections.wait().await;
        api.streams.wait().await;
    })
    .await;
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

    if method == Method::GET
        && segments == ["process", "states", "ws"]
        && api.version.has_state_stream()
    {
        return Ok(ws::states_stream(runner, &api.streams, req));
    }

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
        (&Method::GET, ["project", "state"]) => {
            let with_memory =
                ws::query_param(req.uri().query(), "withMemory").is_some_and(|v| v == "true");
            ok(&project_state(&api, with_memory))
        }
        (&Method::POST, ["project", "stop"]) => {
            runner.request_project_stop();
            ok(&json!({"status": "stopped"}))
        }
        _ => not_found(),
    })
}

/// `GET /project/state`: process-compose's `ProjectState`, keys in its order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProjectState<'a> {
    file_names: &'a [String],
    up_time: i64,
    start_time: String,
    process_num: usize,
    running_process_num: usize,
    user_name: &'a str,
    version: String,
    project_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_state: Option<MemoryState>,
}

/// Go runtime statistics in process-compose; the emulator reports zeros.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemoryState {
    allocated: u64,
    total_allocated: u64,
    system_memory: u64,
    gc_cycles: u32,
}

fn project_state(api: &Api, with_memory: bool) -> ProjectState<'_> {
    let info = &api.project;
    ProjectState {
        file_names: &info.file_names,
        up_time: i64::try_from(info.started_at.elapsed().as_nanos()).unwrap_or(i64::MAX),
        start_time: rfc3339_nano(&info.started),
        process_num: api.runner.processes().count(),
        running_process_num: api
            .runner
            .processes()
            .filter(|p| p.lock().status.is_running())
            .count(),
        user_name: &info.user_name,
        version: api.version.to_string(),
        project_name: &info.project_name,
        memory_state: with_memory.then_some(MemoryState {
            allocated: 0,
            total_allocated: 0,
            system_memory: 0,
            gc_cycles: 0,
        }),
    }
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
pub fn percent_decode(segment: &str) -> Option<String> {
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
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    use crate::project::Project;
    use crate::supervisor::Trigger;

    const TOKEN: &str = "0123456789abcdefghijKLMN";

    /// A served project on 127.0.0.1:0; returns its address and the runner.
    async fn serve_project(yaml: &str, version: Version) -> (std::net::SocketAddr, Arc<Runner>) {
        let project = Project {
            processes: serde_yaml::from_str(yaml).unwrap(),
            ..Default::default()
        };
        // Triggers (exit_on_failure, …) are not used here.
        let (tx, _) = tokio::sync::mpsc::unbounded_channel::<Trigger>();
        let runner = Runner::start(project, &[], version, tx).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = Arc::new(Api {
            runner: runner.clone(),
            token: Some(TOKEN.to_owned()),
            version,
            project: ProjectInfo {
                file_names: vec!["p.yaml".into()],
                project_name: "test".into(),
                user_name: "me".into(),
                started: chrono::Local::now(),
                started_at: std::time::Instant::now(),
            },
            streams: TaskTracker::new(),
        });
        tokio::spawn(serve(Listener::Tcp(listener), api, std::future::pending()));
        (addr, runner)
    }

    async fn connect(
        addr: std::net::SocketAddr,
        path: &str,
        token: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, WsError> {
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        req.headers_mut()
            .insert(TOKEN_HEADER, token.parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_tungstenite::client_async(req, tcp)
            .await
            .map(|(ws, _)| ws)
    }

    fn rejected_with(result: Result<impl Sized, WsError>) -> StatusCode {
        match result {
            Err(WsError::Http(resp)) => resp.status(),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("the handshake succeeded"),
        }
    }

    async fn next_text(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    ) -> Option<serde_json::Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a message within 5 s");
            match msg {
                Some(Ok(Message::Text(text))) => {
                    assert!(text.as_str().ends_with('\n'), "{text}");
                    return Some(serde_json::from_str(text.as_str()).unwrap());
                }
                Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(_)) | None => return None,
            }
        }
    }

    #[tokio::test]
    async fn the_state_stream_over_http() {
        let yaml = "a: { command: 'sleep 100' }\nb: { command: 'sleep 100' }\n";
        let (addr, runner) = serve_project(yaml, Version::DEFAULT).await;

        let bad = connect(addr, "/process/states/ws", "wrong-token-wrong-token").await;
        assert_eq!(rejected_with(bad), StatusCode::UNAUTHORIZED);

        let mut ws = connect(addr, "/process/states/ws?name=a", TOKEN)
            .await
            .unwrap();
        let snap = next_text(&mut ws).await.unwrap();
        assert_eq!(snap["snapshot"], true);
        assert_eq!(snap["state"]["name"], "a");

        // The server answers pings, and reads and ignores other client frames.
        ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
        ws.send(Message::text("ignored")).await.unwrap();
        let pong = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert!(matches!(pong, Some(Ok(Message::Pong(p))) if p.as_ref() == b"hi"));

        runner.get("b").unwrap().request(Cmd::Stop).await.unwrap();
        runner.get("a").unwrap().request(Cmd::Stop).await.unwrap();
        let frames = [
            next_text(&mut ws).await.unwrap(),
            next_text(&mut ws).await.unwrap(),
        ];
        let seen: Vec<(&str, &str, i64)> = frames
            .iter()
            .map(|f| {
                assert!(f.get("snapshot").is_none());
                (
                    f["state"]["name"].as_str().unwrap(),
                    f["state"]["status"].as_str().unwrap(),
                    f["state"]["exit_code"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(seen, [("a", "Terminating", 0), ("a", "Completed", -1)]);

        runner.shutdown().await;
        runner.close_streams();
        assert!(next_text(&mut ws).await.is_none(), "the connection drops");
    }

    #[tokio::test]
    async fn an_old_release_has_no_state_stream() {
        let (addr, runner) =
            serve_project("a: { command: 'sleep 100' }\n", Version::new(1, 103, 0)).await;
        let bad = connect(addr, "/process/states/ws", "wrong-token-wrong-token").await;
        assert_eq!(
            rejected_with(bad),
            StatusCode::UNAUTHORIZED,
            "the token gate first"
        );
        let missing = connect(addr, "/process/states/ws", TOKEN).await;
        assert_eq!(rejected_with(missing), StatusCode::NOT_FOUND);
        runner.shutdown().await;
    }

    #[tokio::test]
    async fn a_snapshot_over_256_frames_closes_the_connection() {
        let yaml: String = (0..300)
            .map(|i| format!("p{i:03}: {{ command: 'sleep 100' }}\n"))
            .collect();
        let (addr, runner) = serve_project(&yaml, Version::DEFAULT).await;
        let mut ws = connect(addr, "/process/states/ws", TOKEN).await.unwrap();
        assert!(
            next_text(&mut ws).await.is_none(),
            "closed before any frame"
        );
        let names: Vec<String> = (100..200).map(|i| format!("p{i:03}")).collect();
        let path = format!("/process/states/ws?name={}", names.join(","));
        let mut ws = connect(addr, &path, TOKEN).await.unwrap();
        for name in &names {
            assert_eq!(
                next_text(&mut ws).await.unwrap()["state"]["name"],
                name.as_str()
            );
        }
        runner.shutdown().await;
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("web").as_deref(), Some("web"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a%20b%2f").as_deref(), Some("a b/"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
