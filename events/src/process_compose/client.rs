//! The REST client: one request per connection, over TCP or a unix socket, with the API token
//! and a bound on both time and response size.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::model::{LogLines, ProcessInfo, ProcessState, ProcessesResponse};
use crate::nats::Secret;

/// The token header process-compose checks (plain equality, 401 on mismatch).
pub const TOKEN_HEADER: &str = "X-PC-Token-Key";
/// A `GET /processes` body larger than this is refused: 5000 processes take about 3 MiB.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Why a request to process-compose failed. [`ComposeError::kind`] is a short label for logs and
/// metrics.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// No connection to the URL's host and port, or to the socket.
    #[error("cannot connect to process-compose at {endpoint}: {source}")]
    Connect {
        /// Where it tried.
        endpoint: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// No complete answer within the client's timeout.
    #[error("process-compose did not answer within {0:?}")]
    Timeout(Duration),
    /// The HTTP exchange broke off (a reset, a response that is not HTTP).
    #[error("HTTP exchange with process-compose failed: {0}")]
    Http(#[from] hyper::Error),
    /// The API token is missing or wrong.
    #[error("process-compose refused the API token (401): check process_compose.token")]
    Unauthorized,
    /// Any other status than 200.
    #[error("process-compose answered {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the body (200 bytes at most).
        body: String,
    },
    /// The body was larger than [`MAX_RESPONSE_BYTES`].
    #[error("process-compose sent a response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The body is not the JSON the API documents.
    #[error("process-compose sent a malformed response: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The server has no state stream (`GET /process/states/ws`, v1.110.0+).
    #[error("process-compose has no state stream (it predates v1.110.0)")]
    StreamUnsupported,
    /// The state stream's WebSocket failed (read by the daemon; this crate has no WebSocket
    /// client of its own).
    #[error("state stream failed: {0}")]
    WebSocket(#[source] Box<dyn std::error::Error + Send + Sync>),
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

    /// A short label for logs and metrics, one of [`ComposeError::KINDS`].
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
pub enum Endpoint {
    /// Its TCP port (`http://HOST:PORT`, with an optional path prefix).
    Tcp {
        /// `HOST:PORT`.
        authority: String,
        /// A path prefix put before every API path (empty for none).
        base_path: String,
    },
    /// Its unix socket (process-compose `-U -u PATH`).
    Unix(PathBuf),
}

impl Endpoint {
    /// The endpoint of an `http://HOST[:PORT][/PREFIX]` URL (port 80 when none is given).
    pub fn from_url(url: &str) -> Result<Self, http::uri::InvalidUri> {
        let uri: Uri = url.parse()?;
        let host = uri.host().unwrap_or("127.0.0.1");
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self::Tcp {
            authority: format!("{host}:{port}"),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
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
    /// A client for `endpoint`, sending `token` (if any) with every request, and giving up on a
    /// request after `timeout`.
    pub fn new(endpoint: Endpoint, token: Option<Secret>, timeout: Duration) -> Self {
        Self {
            endpoint,
            token,
            timeout,
        }
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

    /// `GET /process/logs/{name}/0/{limit}`: the last `limit` lines the process printed, oldest
    /// first (process-compose keeps a bounded buffer per process).
    pub async fn last_log_lines(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<String>, ComposeError> {
        let body = self
            .get(&format!("/process/logs/{}/0/{limit}", percent_encode(name)))
            .await?;
        let logs: LogLines = serde_json::from_slice(&body)?;
        Ok(logs.logs)
    }

    /// `POST /process/restart/{name}`: restarts one process (what an auto-remediation consumer
    /// does with a `crashed` event).
    pub async fn restart(&self, name: &str) -> Result<(), ComposeError> {
        let path = format!("/process/restart/{}", percent_encode(name));
        self.request(Method::POST, &path).await.map(drop)
    }

    async fn get(&self, path: &str) -> Result<Bytes, ComposeError> {
        self.request(Method::GET, path).await
    }

    async fn request(&self, method: Method, path: &str) -> Result<Bytes, ComposeError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path))
            .await
            .map_err(|_| ComposeError::Timeout(self.timeout))?
    }

    /// How long a request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The API token sent with every request.
    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    /// The Host header and the request path for the API path `path` (for a request this client
    /// does not make itself, such as the state stream's upgrade).
    pub fn target<'a>(&'a self, path: &str) -> (&'a str, String) {
        match &self.endpoint {
            Endpoint::Tcp {
                authority,
                base_path,
            } => (authority.as_str(), format!("{base_path}{path}")),
            // Over a unix socket the Host header is arbitrary.
            Endpoint::Unix(_) => ("localhost", path.to_owned()),
        }
    }

    /// A new connection to process-compose (each request of this client takes one).
    pub async fn connect(&self) -> Result<Box<dyn Connection>, ComposeError> {
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
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Percent-encodes everything but unreserved characters, for a path segment or query value.
pub fn percent_encode(name: &str) -> String {
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
