//! The daemon, run in-process through the library API so tests can read its status.

use std::sync::Arc;
use std::time::Duration;

use pc_eventd::Config;
use pc_eventd::Status;
use pc_eventd::{Control, Daemon as PcEventd, DaemonError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A configuration for one test: fast polls, everything on loopback, no health endpoint.
pub fn config(compose_url: &str, nats_url: &str) -> Config {
    let mut config = Config::default();
    config.process_compose.url = compose_url.to_owned();
    config.process_compose.poll_interval = Duration::from_millis(200);
    config.process_compose.max_backoff = Duration::from_secs(1);
    config.process_compose.request_timeout = Duration::from_secs(2);
    config.process_compose.source = Some("test".into());
    config.nats.url = nats_url.to_owned();
    config.nats.ack_timeout = Duration::from_secs(2);
    config.health.enabled = false;
    config.daemon.state_dir = Some(super::state_dir());
    config
}

pub struct Daemon {
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), DaemonError>>>,
    pub status: Arc<Status>,
}

impl Daemon {
    pub fn spawn(config: Config) -> Self {
        let shutdown = CancellationToken::new();
        let status = Arc::new(Status::default());
        let (_reload, reloads) = mpsc::channel(1);
        let loaded = config.clone();
        let daemon = PcEventd::new(config, Box::new(move || Ok(loaded.clone())), status.clone());
        let control = Control {
            shutdown: shutdown.clone(),
            reloads,
        };
        let handle = tokio::spawn(daemon.run(control));
        Self {
            shutdown,
            handle: Some(handle),
            status,
        }
    }

    /// Asks it to stop and returns how it ended.
    pub async fn stop(mut self) -> Result<(), DaemonError> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the daemon stops within 10s")
            .expect("the daemon task does not panic")
    }

    /// Waits for the daemon to end on its own (an error it cannot retry).
    pub async fn finished(mut self) -> Result<(), DaemonError> {
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .expect("the daemon ends within 20s")
            .expect("the daemon task does not panic")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
