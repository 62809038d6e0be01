//! `pc-eventd dashboard`: a live web page of every process on every host, from the event
//! stream. Built on the library as a user's consumer would be: it reads the lifecycle stream
//! and the remediator's stream, and it cannot control anything.
//!
//! The page (`assets/`) is plain HTML, CSS and JavaScript embedded in the binary: no CDN, no
//! build step. It keeps its state from the feed ([`feed`]): the current state of every process
//! first, then the recent events, then the live ones, resumable from the last event id.

mod config;
mod feed;
mod history;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use pc_eventd_events::consumer::{Consumer, ConsumerError, Filter};
use pc_eventd_events::nats::{NatsConfig, SettingsError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::DashboardConfig;

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The access token file cannot be read.
    #[error(transparent)]
    Token(SettingsError),
    /// The address cannot be listened on.
    #[error("dashboard.listen: cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    /// A NATS setting cannot be used.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

impl DashboardError {
    /// Whether the configuration is at fault (the command exits 78).
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Token(_))
    }
}

/// Serves the dashboard until `stop` is cancelled. `nats` reaches the lifecycle stream and
/// `remediation` the remediator's; the page's address is printed on stdout once it listens.
pub async fn run(
    settings: DashboardConfig,
    nats: NatsConfig,
    remediation: NatsConfig,
    stop: CancellationToken,
) -> Result<(), DashboardError> {
    let token = settings.token().map_err(DashboardError::Token)?;
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| DashboardError::Listen {
                address: settings.listen,
                source,
            })?;
    // NATS may be away now: the pages say so until it is back.
    let source = settings.source.as_deref();
    let streams = feed::Streams {
        lifecycle: Consumer::connect_in_background(&nats).await?,
        remediation: Consumer::connect_in_background(&remediation).await?,
        remediation_subject: remediation.subjects().filter(source, None, None, None),
        filter: Filter {
            source: settings.source.clone(),
            ..Filter::default()
        },
        backlog: settings.backlog,
    };
    let address = listener.local_addr().unwrap_or(settings.listen);
    println!("pc-eventd dashboard: http://{address}/");
    if token.is_some() {
        println!("  it asks for the token in dashboard.token_file once per browser");
    }
    tracing::info!(%address, "dashboard listening");
    let dashboard = Arc::new(server::Dashboard {
        streams,
        token,
        stop: stop.clone(),
    });
    let handle = move |request| dashboard.clone().respond(request);
    crate::http::serve("dashboard", listener, handle, stop).await;
    Ok(())
}
