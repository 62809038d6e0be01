//! The process-compose REST client: TCP or unix socket, token auth, bounded time and size.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use futures::StreamExt;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::{Config, ConfigError, Secret};
use crate::process::{ProcessInfo, ProcessState, ProcessesResponse};

/// The token header process-compose checks (plain equality, 401 on mismatch).
const TOKEN_HEADER: &str = "X-PC-Token-Key";
/// A `GET /processes` body larger than this is refused: 5000 processes take about 3 MiB.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Why a request to process-compose failed. [`ComposeError::kind`] is a short label for logs and
/// metrics.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot connect to process-compose at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("process-compose did not answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP exchange with process-compose failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("process-compose refused the API token (401): check process_compose.token")]
    Unauthorized,
    #[error("process-compose answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("process-compose sent a response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("process-compose sent a malformed response: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("process-compose has no state stream (it predates v1.110.0)")]
    StreamUnsupported,
    #[error("state stream failed: {0}")]
    WebSocket(#[source] WsError),
}

impl ComposeError {
    /// Every value [`ComposeError::kind`] can take.
    pub const KINDS: [&'static str; 9] = [
        "connect",
        "timeout",
        "http",
        "unauthorized",
        "status",
        "too_large",
        "malformed",
        "stream_unsupported",
        "websocket",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout(_) => "timeout",
            Self::Http(_) => "http",
            Self::Unauthorized => "unauthorized",
            Self::Status { .. } => "status",
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed",
            Self::StreamUnsupported => "stream_unsupported",
            Self::WebSocket(_) => "websocket",
        }
    }
}

/// Where process-compose listens.
#[derive(Debug, Clone, PartialEq)]
enum Endpoint {
    Tcp {
        authority: String,
        base_path: String,
    },
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { authority, .. } => write!(f, "http://{authority}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A client for one process-compose instance.
#[derive(Debug, Clone)]
pub struct ComposeClient {
    endpoint: Endpoint,
    token: Option<Secret>,
    timeout: Duration,
}

impl ComposeClient {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let pc = &config.process_compose;
        let endpoint = match &pc.socket {
            Some(path) => Endpoint::Unix(path.clone()),
            None => {
                // validated by Config::load
                let uri: Uri = pc.url.parse().map_err(|e| ConfigError {
                    problems: vec![format!("process_compose.url: {e}")],
                })?;
                let host = uri.host().unwrap_or("127.0.0.1");
                let port = uri.port_u16().unwrap_or(80);
                Endpoint::Tcp {
                    authority: format!("{host}:{port}"),
                    base_path: uri.path().trim_end_matches('/').to_owned(),
                }
            }
        };
        Ok(Self {
            endpoint,
            token: config.api_token()?,
            timeout: pc.request_timeout,
        })
    }

    /// `GET /processes`.
    pub async fn processes(&self) -> Result<Vec<ProcessState>, ComposeError> {
        let body = self.get("/processes").await?;
        let parsed: ProcessesResponse = serde_json::from_slice(&body)?;
        Ok(parsed.data)
    }

    /// `GET /process/{name}`.
    pub async fn process(&self, name: &str) -> Result<ProcessState, ComposeError> {
        let body = self
            .get(&format!("/process/{}", percent_encode(name)))
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// The settings of `name` that pc-eventd reads (its readiness probe and restart policy),
    /// from `GET /process/info/{name}`.
    pub async fn process_info(&self, name: &str) -> Result<ProcessInfo, ComposeError> {
        let body = self
            .get(&format!("/process/info/{}", percent_encode(name)))
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `POST /process/restart/{name}`: restarts one process (what an auto-remediation consumer
    /// does with a `crashed` event).
    pub async fn restart(&self, name: &str) -> Result<(), ComposeError> {
        let path = format!("/process/restart/{}", percent_encode(name));
        self.request(Method::POST, &path).await.map(drop)
    }

    /// Subscribes to the state stream (`GET /process/states/ws`, process-compose v1.110.0+),
    /// for the named processes only or, with `None`, for all. A server without the stream
    /// answers [`ComposeError::StreamUnsupported`].
    pub async fn subscribe(&self, names: Option<&[String]>) -> Result<StateStream, ComposeError> {
        let mut path = "/process/states/ws".to_owned();
        if let Some(names) = names {
            let names: Vec<String> = names.iter().map(|n| percent_encode(n)).collect();
            path = format!("{path}?name={}", names.join(","));
        }
        let handshake = async {
            let (host, path) = self.target(&path);
            let mut request = Request::get(format!("ws://{host}{path}"))
                .header(http::header::HOST, host)
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Version", "13")
                .header(
                    "Sec-WebSocket-Key",
                    tokio_tungstenite::tungstenite::handshake::client::generate_key(),
                );
            if let Some(token) = &self.token {
                request = request.header(TOKEN_HEADER, token.expose());
            }
            let request = request.body(()).expect("a valid upgrade request");
            let stream = self.connect().await?;
            tokio_tungstenite::client_async(request, stream)
                .await
                .map_err(|err| match err {
                    WsError::Http(response) => match response.status() {
                        StatusCode::NOT_FOUND => ComposeError::StreamUnsupported,
                        StatusCode::UNAUTHORIZED => ComposeError::Unauthorized,
                        status => ComposeError::Status {
                            status,
                            body: String::from_utf8_lossy(
                                response.body().as_deref().unwrap_or_default(),
                            )
                            .chars()
                            .take(200)
                            .collect(),
                        },
                    },
                    other => ComposeError::WebSocket(other),
                })
        };
        let (socket, _) = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| ComposeError::Timeout(self.timeout))??;
        Ok(StateStream { socket })
    }

    async fn get(&self, path: &str) -> Result<Bytes, ComposeError> {
        self.request(Method::GET, path).await
    }

    async fn request(&self, method: Method, path: &str) -> Result<Bytes, ComposeError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path))
            .await
            .map_err(|_| ComposeError::Timeout(self.timeout))?
    }

    /// The Host header and the request path for `path`.
    fn target<'a>(&'a self, path: &str) -> (&'a str, String) {
        match &self.endpoint {
            Endpoint::Tcp {
                authority,
                base_path,
            } => (authority.as_str(), format!("{base_path}{path}")),
            // Over a unix socket the Host header is arbitrary.
            Endpoint::Unix(_) => ("localhost", path.to_owned()),
        }
    }

    async fn connect(&self) -> Result<Box<dyn Connection>, ComposeError> {
        let connect_error = |source| ComposeError::Connect {
            endpoint: self.endpoint.to_string(),
            source,
        };
        Ok(match &self.endpoint {
            Endpoint::Tcp { authority, .. } => Box::new(
                TcpStream::connect(authority.as_str())
                    .await
                    .map_err(connect_error)?,
            ),
            Endpoint::Unix(path) => {
                Box::new(UnixStream::connect(path).await.map_err(connect_error)?)
            }
        })
    }

    async fn exchange(&self, method: Method, path: &str) -> Result<Bytes, ComposeError> {
        let (host, path) = self.target(path);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host);
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .expect("a request with valid headers always builds");
        let response = send(self.connect().await?, request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => ComposeError::Http(*e),
                Err(_) => ComposeError::TooLarge,
            })?
            .to_bytes();
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::UNAUTHORIZED => Err(ComposeError::Unauthorized),
            status => Err(ComposeError::Status {
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
        }
    }
}

/// A byte stream to process-compose: TCP or a unix socket.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// One frame of the state stream: `{"snapshot":true,"state":{…}}` on connect, then
/// `{"state":{…}}` for every change.
#[derive(Debug, Clone, Deserialize)]
pub struct StateFrame {
    #[serde(default)]
    pub snapshot: bool,
    pub state: ProcessState,
}

/// An open state-stream subscription.
pub struct StateStream {
    socket: WebSocketStream<Box<dyn Connection>>,
}

impl StateStream {
    /// The next frame; `None` once the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<StateFrame, ComposeError>> {
        loop {
            let message = match self.socket.next().await? {
                Ok(message) => message,
                Err(err) => return Some(Err(ComposeError::WebSocket(err))),
            };
            match message {
                Message::Text(text) => {
                    return Some(serde_json::from_str(text.as_str()).map_err(ComposeError::from));
                }
                Message::Binary(bytes) => {
                    return Some(serde_json::from_slice(&bytes).map_err(ComposeError::from));
                }
                Message::Close(_) => return None,
                // tungstenite answers pings itself
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters, for a path segment or query value.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn send<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, ComposeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends when the response is read or the request is dropped.
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "process-compose connection closed with an error");
        }
    });
    Ok(sender.send_request(request).await?)
}
