//! The daemon: the observe → diff → outbox loop and its lifecycle (readiness, reload, stop).
//!
//! One loop observes: make sure the stream is right, read process-compose (stream frames or
//! polls), diff against what was last observed, and write the events to the outbox. The relay
//! (`crate::delivery::relay`) publishes from the outbox beside it, so a NATS outage delays events instead
//! of stopping observation or dropping them. A reload (SIGHUP) swaps only what changed and keeps
//! the snapshot, so no event is lost or repeated across it.

mod observe;
mod reload;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pc_eventd_events::process_compose::ComposeClient;
use pc_eventd_events::publish::{PublishError, Publisher};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, ConfigError, HealthConfig};
use crate::delivery::outbox::{Outbox, OutboxError};
use crate::delivery::records::StateStore;
use crate::delivery::relay::Relay;
use crate::diff::{ProcessSettings, Snapshot};
use crate::ops::logging::LogHandle;
use crate::ops::notify::{self, Watchdog};
use crate::ops::status::Status;
use crate::source::SourceMode;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot serve the health endpoint on {addr}: {source}")]
    Health {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Reads the configuration again, from the same sources, for a reload.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What the daemon listens to besides its peers.
pub struct Control {
    pub shutdown: CancellationToken,
    /// One message per reload request (SIGHUP).
    pub reloads: mpsc::Receiver<()>,
}

/// The daemon and everything it owns.
pub struct Daemon {
    config: Config,
    loader: ConfigLoader,
    status: Arc<Status>,
    watchdog: Watchdog,
    log: Option<LogHandle>,
    /// `READY=1` went out (after the first observation was published).
    ready_sent: std::sync::atomic::AtomicBool,
    /// When `STATUS=` last went out after an observation.
    last_status: std::sync::Mutex<Option<Instant>>,
    /// An observation came sooner than a second after the last `STATUS=`: it has not been
    /// reported yet (see `Daemon::report_status`).
    status_pending: std::sync::atomic::AtomicBool,
    /// The last published state per process, kept in NATS (see [`crate::delivery::records`]).
    state: Arc<tokio::sync::Mutex<Option<StateStore>>>,
    /// Where events wait for JetStream; opened by [`Daemon::run`].
    queue: Option<Queue>,
    /// The stored state was loaded once (at start); later opens write it instead.
    state_loaded: std::sync::atomic::AtomicBool,
    /// Each process's readiness grace and restart backoff, learned from its settings.
    settings: std::sync::Mutex<ProcessSettings>,
}

/// The outbox, shared with the relay.
struct Queue {
    outbox: Arc<std::sync::Mutex<Outbox>>,
    /// Wakes the relay after a push.
    wake: Arc<Notify>,
}

/// What the observation loop carries from one turn to the next.
struct Observing {
    compose: ComposeClient,
    publisher: Publisher,
    health: Option<HealthServer>,
    /// Hands the relay the publisher once the stream is ready (`None` while it is not).
    publishers: watch::Sender<Option<Publisher>>,
    snapshot: Snapshot,
    /// The stream and the state bucket are ready: events may flow.
    stream_ready: bool,
    /// Failures to reach process-compose in a row.
    failures: u32,
    /// In `auto` mode: whether the server has the state stream (None: not known yet).
    stream_supported: Option<bool>,
}

/// What one turn of the observation loop asks for next.
enum Turn {
    /// Wait this long (or for a reload), then go on.
    Wait(Duration),
    /// Go on at once.
    Again,
    /// Shut down.
    Stop,
}

/// The running relay, and how to tell it to finish.
struct RelayTask {
    finish: CancellationToken,
    task: JoinHandle<()>,
}

/// The running health endpoint.
struct HealthServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Daemon {
    pub fn new(config: Config, loader: ConfigLoader, status: Arc<Status>) -> Self {
        let settings = ProcessSettings {
            fixed_readiness_grace: config.process_compose.readiness_grace,
            conditions: config.conditions.clone(),
            ..ProcessSettings::default()
        };
        Self {
            config,
            loader,
            status,
            watchdog: Watchdog::from_env(),
            log: None,
            ready_sent: std::sync::atomic::AtomicBool::new(false),
            last_status: std::sync::Mutex::new(None),
            status_pending: std::sync::atomic::AtomicBool::new(false),
            state: Arc::default(),
            queue: None,
            state_loaded: std::sync::atomic::AtomicBool::new(false),
            settings: std::sync::Mutex::new(settings),
        }
    }

    /// Lets a reload change the log level.
    pub fn with_log_handle(mut self, log: Option<LogHandle>) -> Self {
        self.log = log;
        self
    }

    /// Runs until `control.shutdown` is cancelled.
    pub async fn run(mut self, mut control: Control) -> Result<(), DaemonError> {
        let compose = self
            .config
            .process_compose
            .client()
            .map_err(ConfigError::from)?;
        // Signals stop the waits below too: a daemon waiting for a lock, NATS or the stream
        // stops on SIGTERM, not when the wait ends.
        let Some(outbox) = self.open_outbox(&control.shutdown).await? else {
            return Ok(());
        };
        let publisher = self.connect().await?;
        let health = start_health(&self.config.health, &self.status).await?;
        let (publishers, relay) = self.start_relay(outbox);
        info!(
            source = %self.config.process_compose.source(),
            nats = %self.config.nats.url,
            poll_interval = ?self.config.process_compose.poll_interval,
            watchdog = ?self.watchdog.interval(),
            "pc-eventd running"
        );
        notify::status("waiting for NATS JetStream and process-compose");

        let mut observing = Observing {
            compose,
            publisher,
            health,
            publishers,
            snapshot: Snapshot::default(),
            stream_ready: false,
            failures: 0,
            stream_supported: None,
        };
        let observed = self.observe(&mut observing, &mut control).await;

        Self::stop(relay, observing.health).await;
        observed
    }

    /// Starts the relay beside the loop, on `outbox`; it publishes through the publisher sent
    /// on the returned channel once the stream is ready.
    fn start_relay(&mut self, outbox: Outbox) -> (watch::Sender<Option<Publisher>>, RelayTask) {
        let outbox = Arc::new(std::sync::Mutex::new(outbox));
        let wake = Arc::new(Notify::new());
        let (publishers, relay_publishers) = watch::channel(None);
        let finish = CancellationToken::new();
        let task = tokio::spawn(
            Relay::new(
                outbox.clone(),
                wake.clone(),
                relay_publishers,
                self.state.clone(),
                self.status.clone(),
                self.config.daemon.shutdown_timeout,
            )
            .run(finish.clone()),
        );
        self.queue = Some(Queue { outbox, wake });
        (publishers, RelayTask { finish, task })
    }

    /// Whatever ended observation (shutdown, or an error no retry can fix), the relay gets
    /// `shutdown_timeout` to empty the outbox and the health endpoint stops.
    async fn stop(relay: RelayTask, health: Option<HealthServer>) {
        notify::stopping();
        info!("pc-eventd stopping");
        relay.finish.cancel();
        let _ = relay.task.await;
        if let Some(health) = health {
            health.stop.cancel();
            let _ = health.task.await;
        }
    }

    /// The observation loop: readies the stream, then observes process-compose (a stream
    /// session or a poll) turn after turn until shutdown or an error no retry can fix.
    async fn observe(
        &mut self,
        observing: &mut Observing,
        control: &mut Control,
    ) -> Result<(), DaemonError> {
        let shutdown = control.shutdown.clone();
        while !shutdown.is_cancelled() {
            if !observing.stream_ready {
                self.ready_the_stream(observing, &shutdown).await?;
                continue;
            }
            let use_stream = match self.config.process_compose.mode {
                SourceMode::Poll => false,
                SourceMode::Stream => true,
                SourceMode::Auto => observing.stream_supported != Some(false),
            };
            let turn = if use_stream {
                self.stream_turn(observing, control).await
            } else {
                self.poll_turn(observing, &shutdown).await
            };
            let wait = match turn {
                Turn::Stop => break,
                Turn::Again => continue,
                Turn::Wait(wait) => wait,
            };
            self.watchdog.pet();
            self.status.expect_within(wait);
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(()) = control.reloads.recv() => self.reload_observing(observing).await,
                () = self.watchdog.sleep(wait) => {}
            }
        }
        Ok(())
    }

    /// Makes the stream and the state bucket ready; only then may the relay publish.
    async fn ready_the_stream(
        &self,
        observing: &mut Observing,
        shutdown: &CancellationToken,
    ) -> Result<(), DaemonError> {
        observing.publishers.send_replace(None);
        let publisher = &observing.publisher;
        observing.stream_ready = self.ensure_stream(publisher, shutdown).await?
            && self
                .open_state(publisher, &mut observing.snapshot, shutdown)
                .await;
        if observing.stream_ready {
            observing.publishers.send_replace(Some(publisher.clone()));
        }
        Ok(())
    }

    /// A reload: a changed stream must be made ready again.
    async fn reload_observing(&mut self, observing: &mut Observing) {
        let changed = self
            .reload(
                &mut observing.compose,
                &mut observing.publisher,
                &mut observing.health,
            )
            .await;
        observing.stream_ready &= !changed.stream;
    }

    /// Connects to NATS with the current settings, reporting the connection state.
    async fn connect(&self) -> Result<Publisher, PublishError> {
        // A reload replaces the connection: the old one's last words must not count.
        let generation = self.status.new_nats_connection();
        let status = self.status.clone();
        let connected_before = std::sync::atomic::AtomicBool::new(false);
        Publisher::connect(&self.config.nats, move |event| match event {
            async_nats::Event::Connected => {
                if connected_before.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    status.metrics.nats_reconnects.inc();
                }
                status.set_nats(generation, Ok(()));
            }
            async_nats::Event::Disconnected => {
                status.set_nats(generation, Err("disconnected".into()));
            }
            async_nats::Event::Closed => {
                status.set_nats(generation, Err("connection closed".into()));
            }
            _ => {}
        })
        .await
    }
}

async fn start_health(
    config: &HealthConfig,
    status: &Arc<Status>,
) -> Result<Option<HealthServer>, DaemonError> {
    if !config.enabled {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Health {
            addr: config.listen,
            source,
        })?;
    info!(addr = %config.listen, "health endpoint listening");
    let stop = CancellationToken::new();
    let task = tokio::spawn(crate::ops::health::serve(
        listener,
        status.clone(),
        stop.clone(),
    ));
    Ok(Some(HealthServer { stop, task }))
}
