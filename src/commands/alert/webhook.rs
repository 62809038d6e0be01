//! The webhook: `POST` a JSON body to a URL (http, or https with the system's CA roots), with a
//! timeout per attempt and bounded retries.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::warn;

use super::config::AlertConfig;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("alert.url: {problem} (value not shown)")]
    Url { problem: String },
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
}

impl WebhookError {
    /// Whether trying again may help: a 4xx other than 408 and 429 will not.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                !status.is_client_error()
                    || matches!(
                        *status,
                        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
                    )
            }
            Self::Url { .. } => false,
            Self::Connect { .. } | Self::Timeout { .. } => true,
        }
    }
}

/// Where alerts go.
#[derive(Clone)]
pub(crate) struct Webhook {
    /// `scheme://host:port`, for messages: the path and query may hold a token.
    url: String,
    uri: Uri,
    /// `host:port` to connect to.
    authority: String,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
}

impl Webhook {
    pub(crate) fn new(url: &str, config: &AlertConfig) -> Result<Self, WebhookError> {
        let url_error = |problem: &str| WebhookError::Url {
            problem: problem.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| url_error("not a URL"))?;
        let host = uri.host().ok_or_else(|| url_error("no host"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (None, 80),
            Some("https") => {
                let mut roots = tokio_rustls::rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(url_error(
                        "https, but no CA certificates found on this system",
                    ));
                }
                let tls = tokio_rustls::rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                (Some(tokio_rustls::TlsConnector::from(Arc::new(tls))), 443)
            }
            _ => return Err(url_error("expected an http:// or https:// URL")),
        };
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(default_port));
        Ok(Self {
            url: format!("{}://{authority}", uri.scheme_str().unwrap_or_default()),
            uri,
            authority,
            tls,
            timeout: config.timeout,
            retries: config.retries,
            retry_backoff: config.retry_backoff,
        })
    }

    /// Posts `body`, retrying failures that may pass (connection errors, timeouts, 5xx, 408,
    /// 429) up to `retries` times with doubling waits.
    pub(crate) async fn post(&self, body: &[u8]) -> Result<(), WebhookError> {
        let mut attempt = 0;
        loop {
            let result = match tokio::time::timeout(self.timeout, self.post_once(body)).await {
                Ok(result) => result,
                Err(_) => Err(WebhookError::Timeout {
                    url: self.url.clone(),
                    timeout: self.timeout,
                }),
            };
            let err = match result {
                Ok(()) => return Ok(()),
                Err(err) if err.is_retryable() && attempt < self.retries => err,
                Err(err) => return Err(err),
            };
            let wait = pc_eventd_events::retry::delay(
                attempt + 1,
                self.retry_backoff,
                self.retry_backoff * 1024,
            );
            attempt += 1;
            warn!(error = %err, retry_in = ?wait, attempt, "webhook failed, will retry");
            tokio::time::sleep(wait).await;
        }
    }

    async fn post_once(&self, body: &[u8]) -> Result<(), WebhookError> {
        let connect_error =
            |source: Box<dyn std::error::Error + Send + Sync>| WebhookError::Connect {
                url: self.url.clone(),
                source,
            };
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| connect_error(e.into()))?;
        let host = self.uri.host().unwrap_or_default().to_owned();
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "pc-eventd")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("a request with valid headers always builds");
        let status = match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await,
            Some(tls) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| connect_error(e.into()))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| connect_error(e.into()))?;
                exchange(TokioIo::new(stream), request).await
            }
        }
        .map_err(|e| connect_error(e.into()))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status {
                url: self.url.clone(),
                status,
            })
        }
    }
}

/// One HTTP/1.1 exchange on `io`; the body is read and dropped.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Result<StatusCode, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}
