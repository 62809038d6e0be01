//! The process-compose REST client: TCP or unix socket, token auth, bounded time and size.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::config::{Config, ConfigError, Secret};
use crate::process::{ProcessState, ProcessesResponse};

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
}

impl ComposeError {
    /// Every value [`ComposeError::kind`] can take.
    pub const KINDS: [&'static str; 7] = [
        "connect",
        "timeout",
        "http",
        "unauthorized",
        "status",
        "too_large",
        "malformed",
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

    async fn get(&self, path: &str) -> Result<Bytes, ComposeError> {
        tokio::time::timeout(self.timeout, self.exchange(path))
            .await
            .map_err(|_| ComposeError::Timeout(self.timeout))?
    }

    async fn exchange(&self, path: &str) -> Result<Bytes, ComposeError> {
        let connect_error = |source| ComposeError::Connect {
            endpoint: self.endpoint.to_string(),
            source,
        };
        let (host, full_path) = match &self.endpoint {
            Endpoint::Tcp {
                authority,
                base_path,
            } => (authority.as_str(), format!("{base_path}{path}")),
            // Over a unix socket the Host header is arbitrary.
            Endpoint::Unix(_) => ("localhost", path.to_owned()),
        };
        let mut request = Request::get(full_path).header(http::header::HOST, host);
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .expect("a GET with valid headers always builds");
        let response = match &self.endpoint {
            Endpoint::Tcp { authority, .. } => {
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(connect_error)?;
                send(stream, request).await?
            }
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(connect_error)?;
                send(stream, request).await?
            }
        };
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
