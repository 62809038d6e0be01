//! The daemon: the observe → diff → outbox loop and its lifecycle (readiness, reload, stop).
//!
//! One loop observes: make sure the stream is right, read process-compose (stream frames or
//! polls), diff against what was last observed, and write the events to the outbox. The relay
//! (`crate::delivery::relay`) publishes from the outbox beside it, so a NATS outage delays events instead
//! of stopping observation or dropping them. A reload (SIGHUP) swaps only what changed and keeps
//! the snapshot, so no event is lost or repeated across it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use std::collections::BTreeSet;

use pc_eventd_events::process_compose::{ComposeClient, ComposeError};

use crate::config::{Config, ConfigError, HealthConfig};
use crate::delivery::outbox::{Outbox, OutboxError, Pushed};
use crate::delivery::records::StateStore;
use crate::delivery::relay::{self, Relay};
use crate::diff::{DiffContext, ProcessRecord, ProcessTimings, Snapshot, diff, diff_one};
use crate::ops::logging::LogHandle;
use crate::ops::notify::{self, Watchdog};
use crate::ops::status::Status;
use crate::source::{SourceMode, StateFrame, StateStream};
use crate::sync::lock;
use pc_eventd_events::event::{EventsLost, LifecycleEvent, SubjectScheme};
use pc_eventd_events::nats::{NatsConfig, StreamConfig};
use pc_eventd_events::process_compose::model::{ProcessInfo, ProcessState, ProcessStatus};
use pc_eventd_events::publish::{Message, PublishError, Publisher};
use pc_eventd_events::retry;

/// Shortest and longest wait between two attempts to reach NATS.
const NATS_RETRY_MIN: Duration = Duration::from_millis(200);
const NATS_RETRY_MAX: Duration = Duration::from_secs(10);

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

/// How much longer than its shutdown timeout a predecessor may hold the outbox's lock.
const OUTBOX_LOCK_SLACK: Duration = Duration::from_secs(5);

/// Shortest interval between two `STATUS=` updates driven by observations.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Most names in one state-stream subscription: below the server's 256-frame buffer, which
/// the connect snapshot must fit in.
const STREAM_CHUNK: usize = 200;
/// Frames waiting to be diffed and published.
const STREAM_QUEUE: usize = 4096;
/// How often a stream session looks for runs whose readiness grace ran out (no frame says so).
const READINESS_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Process settings read at once from process-compose.
const INFO_READS_IN_FLIGHT: usize = 8;

/// How a stream session ended.
enum SessionEnd {
    Shutdown,
    Reload,
    Failed(ComposeError),
}

/// Forwards a subscription's frames; an error or the end of the stream ends the session.
async fn read_frames(
    mut stream: StateStream,
    frames: mpsc::Sender<Result<StateFrame, ComposeError>>,
) {
    loop {
        let next = stream.next().await;
        let end = !matches!(next, Some(Ok(_)));
        let item = next.unwrap_or_else(|| {
            Err(ComposeError::WebSocket(Box::new(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed,
            )))
        });
        if frames.send(item).await.is_err() || end {
            return;
        }
    }
}

/// The processes of `observed`, with the state `snapshot` already has for those it knows: a
/// diff against it reports only processes that appeared or disappeared.
fn membership(snapshot: &Snapshot, observed: &[ProcessState]) -> Vec<ProcessState> {
    observed
        .iter()
        .map(|p| {
            snapshot
                .state_of(&p.name)
                .cloned()
                .unwrap_or_else(|| p.clone())
        })
        .collect()
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
    /// The last published state per process, kept in NATS (see [`crate::delivery::records`]).
    state: Arc<tokio::sync::Mutex<Option<StateStore>>>,
    /// Where events wait for JetStream; opened by [`Daemon::run`].
    queue: Option<Queue>,
    /// The stored state was loaded once (at start); later opens write it instead.
    state_loaded: std::sync::atomic::AtomicBool,
    /// Each process's readiness grace and restart backoff, learned from its settings.
    timings: std::sync::Mutex<ProcessTimings>,
}

/// The outbox, shared with the relay.
struct Queue {
    outbox: Arc<std::sync::Mutex<Outbox>>,
    /// Wakes the relay after a push.
    wake: Arc<Notify>,
}

/// A stream session's subscriptions. The server closes a subscriber whose 256-frame buffer
/// overflows, and the connect snapshot alone overflows it past 256 processes: large projects
/// subscribe by name, in chunks.
struct Subscriptions {
    frames: mpsc::Sender<Result<StateFrame, ComposeError>>,
    readers: tokio::task::JoinSet<()>,
    /// Subscribed by name; `covered` holds the names subscribed so far.
    chunked: bool,
    covered: BTreeSet<String>,
}

impl Subscriptions {
    /// Subscribes for `observed`: to all processes at once, or by name in chunks. The frames of
    /// every subscription come out of the returned receiver.
    async fn open(
        compose: &ComposeClient,
        observed: &[ProcessState],
    ) -> Result<(Self, mpsc::Receiver<Result<StateFrame, ComposeError>>), ComposeError> {
        let (frames, received) = mpsc::channel(STREAM_QUEUE);
        let mut subscriptions = Self {
            frames,
            readers: tokio::task::JoinSet::new(),
            chunked: observed.len() > STREAM_CHUNK,
            covered: BTreeSet::new(),
        };
        if subscriptions.chunked {
            subscriptions.cover(compose, observed).await?;
        } else {
            subscriptions.subscribe(compose, None).await?;
        }
        Ok((subscriptions, received))
    }

    /// Subscribes by name to those of `observed` not covered yet (nothing to do when one
    /// subscription takes every process).
    async fn cover(
        &mut self,
        compose: &ComposeClient,
        observed: &[ProcessState],
    ) -> Result<(), ComposeError> {
        if !self.chunked {
            return Ok(());
        }
        let new: Vec<String> = observed
            .iter()
            .map(|p| p.name.clone())
            .filter(|name| !self.covered.contains(name))
            .collect();
        for group in new.chunks(STREAM_CHUNK) {
            self.subscribe(compose, Some(group)).await?;
            self.covered.extend(group.iter().cloned());
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        compose: &ComposeClient,
        names: Option<&[String]>,
    ) -> Result<(), ComposeError> {
        let stream = crate::source::subscribe(compose, names).await?;
        self.readers.spawn(read_frames(stream, self.frames.clone()));
        Ok(())
    }
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

/// The running health endpoint.
struct HealthServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Daemon {
    pub fn new(config: Config, loader: ConfigLoader, status: Arc<Status>) -> Self {
        let timings = ProcessTimings {
            fixed_readiness_grace: config.process_compose.readiness_grace,
            ..ProcessTimings::default()
        };
        Self {
            config,
            loader,
            status,
            watchdog: Watchdog::from_env(),
            log: None,
            ready_sent: std::sync::atomic::AtomicBool::new(false),
            last_status: std::sync::Mutex::new(None),
            state: Arc::default(),
            queue: None,
            state_loaded: std::sync::atomic::AtomicBool::new(false),
            timings: std::sync::Mutex::new(timings),
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
        let outbox = Arc::new(std::sync::Mutex::new(outbox));
        let publisher = self.connect().await?;
        let health = start_health(&self.config.health, &self.status).await?;
        let wake = Arc::new(Notify::new());
        let (publishers, relay_publishers) = watch::channel(None);
        let finish_relay = CancellationToken::new();
        let relay = tokio::spawn(
            Relay {
                outbox: outbox.clone(),
                status: self.status.clone(),
                state: self.state.clone(),
                publishers: relay_publishers,
                wake: wake.clone(),
                shutdown_timeout: self.config.daemon.shutdown_timeout,
            }
            .run(finish_relay.clone()),
        );
        self.queue = Some(Queue { outbox, wake });
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

        // Whatever ended observation (shutdown, or an error no retry can fix), the relay gets
        // `shutdown_timeout` to empty the outbox and the health endpoint stops.
        notify::stopping();
        info!("pc-eventd stopping");
        finish_relay.cancel();
        let _ = relay.await;
        if let Some(health) = observing.health {
            health.stop.cancel();
            let _ = health.task.await;
        }
        observed
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

    /// One session on process-compose's state stream, and what its end asks for.
    async fn stream_turn(&mut self, observing: &mut Observing, control: &mut Control) -> Turn {
        let session = self
            .stream_session(
                &observing.compose,
                &mut observing.snapshot,
                &control.shutdown,
                &mut control.reloads,
            )
            .await;
        match session {
            SessionEnd::Shutdown => Turn::Stop,
            SessionEnd::Reload => {
                self.reload_observing(observing).await;
                Turn::Again
            }
            SessionEnd::Failed(ComposeError::StreamUnsupported)
                if self.config.process_compose.mode == SourceMode::Auto =>
            {
                info!("process-compose has no state stream (before v1.110.0): polling");
                observing.stream_supported = Some(false);
                Turn::Again
            }
            SessionEnd::Failed(err) => {
                observing.stream_supported = None;
                observing.failures = observing.failures.saturating_add(1);
                Turn::Wait(self.source_failed(&err, observing.failures))
            }
        }
    }

    /// One poll of `GET /processes`, published, and how long to wait for the next.
    async fn poll_turn(&self, observing: &mut Observing, shutdown: &CancellationToken) -> Turn {
        // A poll changes nothing until it returns, so it can be abandoned at shutdown.
        let Some(polled) = shutdown
            .run_until_cancelled(self.poll(&observing.compose))
            .await
        else {
            return Turn::Stop;
        };
        match polled {
            Ok(observed) => {
                self.status.set_mode(SourceMode::Poll);
                if observing.failures > 0 {
                    info!(
                        after_failures = observing.failures,
                        "process-compose is answering again"
                    );
                }
                observing.failures = 0;
                self.learn_timings(&observing.compose, &observed).await;
                self.publish_observation(&mut observing.snapshot, &observed);
                Turn::Wait(self.config.process_compose.poll_interval)
            }
            Err(err) => {
                // It may come back upgraded: look for the stream again.
                observing.stream_supported = None;
                observing.failures = observing.failures.saturating_add(1);
                Turn::Wait(self.source_failed(&err, observing.failures))
            }
        }
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

    /// One poll, timed and counted.
    async fn poll(&self, compose: &ComposeClient) -> Result<Vec<ProcessState>, ComposeError> {
        self.status
            .expect_within(self.config.process_compose.request_timeout);
        let started = Instant::now();
        let result = compose.processes().await;
        let metrics = &self.status.metrics;
        metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                metrics.polls.inc();
                self.status.set_process_compose(Ok(()));
            }
            Err(err) => {
                metrics.poll_failed(err.kind());
                if matches!(err, ComposeError::Malformed(_)) {
                    metrics.malformed_responses.inc();
                }
                self.status.set_process_compose(Err(err.to_string()));
            }
        }
        result
    }

    /// Logs a failure to reach process-compose and returns how long to wait.
    fn source_failed(&self, err: &ComposeError, failures: u32) -> Duration {
        let pc = &self.config.process_compose;
        let wait = retry::jittered_delay(failures, pc.poll_interval, pc.max_backoff);
        warn!(error = %err, kind = err.kind(), consecutive = failures, retry_in = ?wait, "process-compose unavailable");
        notify::status(&self.status.summary());
        wait
    }

    fn diff_context<'a>(
        &self,
        source: &'a str,
        subjects: &'a SubjectScheme,
        synthetic: bool,
        timings: &'a ProcessTimings,
    ) -> DiffContext<'a> {
        let lag = if synthetic {
            self.config.process_compose.poll_interval
        } else {
            Duration::ZERO
        };
        DiffContext {
            source,
            subjects,
            observed_at: SystemTime::now(),
            synthetic,
            lag,
            timings,
        }
    }

    fn timings(&self) -> std::sync::MutexGuard<'_, ProcessTimings> {
        lock(&self.timings)
    }

    /// Reads the settings of the processes in `observed` whose timings matter and are not
    /// known yet: the readiness probe of one that has a probe, the restart backoff of one being
    /// stopped (the pause that tells a manual restart from a stop and a start). Unreadable
    /// settings leave the defaults (60 s, 1 s).
    async fn learn_timings(&self, compose: &ComposeClient, observed: &[ProcessState]) {
        let unknown: Vec<String> = {
            let timings = self.timings();
            let needs_grace = |p: &ProcessState| {
                p.has_ready_probe
                    && timings.fixed_readiness_grace.is_none()
                    && !timings.readiness_grace.contains_key(&p.name)
            };
            let needs_backoff = |p: &ProcessState| {
                p.status == ProcessStatus::Terminating
                    && !timings.restart_backoff.contains_key(&p.name)
            };
            observed
                .iter()
                .filter(|p| needs_grace(p) || needs_backoff(p))
                .map(|p| p.name.clone())
                .collect()
        };
        if unknown.is_empty() {
            return;
        }
        let learned: Vec<(String, ProcessInfo)> = futures::stream::iter(unknown)
            .map(|name| async move {
                match compose.process_info(&name).await {
                    Ok(info) => Some((name, info)),
                    Err(err) => {
                        debug!(error = %err, process = %name, "cannot read the process's settings; the defaults apply");
                        None
                    }
                }
            })
            .buffer_unordered(INFO_READS_IN_FLIGHT)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let mut timings = self.timings();
        for (name, info) in learned {
            let grace = info
                .readiness_probe
                .map_or(crate::diff::DEFAULT_READINESS_GRACE, |p| {
                    p.readiness_grace()
                });
            let backoff = Duration::from_secs(info.restart_policy.backoff_seconds);
            timings.readiness_grace.insert(name.clone(), grace);
            timings.restart_backoff.insert(name, backoff);
        }
    }

    /// Diffs a full observation (a poll, a reconnect) against `snapshot`, queues the events
    /// with the records they leave behind, and advances the snapshot.
    fn publish_observation(&self, snapshot: &mut Snapshot, observed: &[ProcessState]) {
        let source = self.config.process_compose.source();
        let subjects = self.config.nats.subjects();
        let grace = self.timings();
        let ctx = self.diff_context(&source, &subjects, true, &grace);
        let (next, events) = diff(snapshot, observed, &ctx);
        drop(grace);
        let records = next.records(snapshot.changed_names(&next));
        *snapshot = next;
        self.enqueue(&events, records);
        self.observed(snapshot);
    }

    /// Like [`Daemon::publish_observation`] for one stream frame.
    fn publish_frame(&self, snapshot: &mut Snapshot, frame: &StateFrame) {
        let source = self.config.process_compose.source();
        let subjects = self.config.nats.subjects();
        let grace = self.timings();
        let ctx = self.diff_context(&source, &subjects, frame.snapshot, &grace);
        let (update, events) = diff_one(snapshot, &frame.state, &ctx);
        drop(grace);
        let name = &frame.state.name;
        let before = snapshot.record(name);
        snapshot.apply(update);
        // A frame that changed nothing (most of the snapshot sent on connect) stores nothing.
        let records = if snapshot.record(name) == before {
            Vec::new()
        } else {
            snapshot.records([name.clone()])
        };
        self.enqueue(&events, records);
        self.observed(snapshot);
    }

    /// Opens the outbox of this process-compose instance in the state directory.
    /// Waits (up to the shutdown timeout and 5 s more) for a lock held by another daemon: a
    /// predecessor killed or stopping may not have exited yet when its successor starts.
    /// `None`: shut down while waiting.
    async fn open_outbox(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Outbox>, DaemonError> {
        let source = self.config.process_compose.source();
        let state_dir = self.config.daemon.state_dir().ok_or_else(|| {
            ConfigError::one(
                "daemon.state_dir: not set, and none of STATE_DIRECTORY, XDG_STATE_HOME or HOME is"
                    .into(),
            )
        })?;
        // One directory per instance: several daemons may share a state directory.
        let dir = state_dir
            .join("outbox")
            .join(pc_eventd_events::event::subject_token(&source).replace('/', "%2F"));
        let loss_marker = || -> crate::delivery::outbox::LossMarker {
            let (subjects, source) = (self.config.nats.subjects(), source.clone());
            Box::new(move |loss| {
                let marker = EventsLost::new(
                    &subjects,
                    &source,
                    loss.lost,
                    loss.first_lost_at,
                    loss.last_lost_at,
                );
                Message::new(
                    marker.subject.clone(),
                    marker.id.clone(),
                    &marker.kind,
                    &marker,
                )
                .expect("markers always serialize")
            })
        };
        let give_up_at = Instant::now() + self.config.daemon.shutdown_timeout + OUTBOX_LOCK_SLACK;
        let mut said = false;
        let outbox = loop {
            let outbox = &self.config.outbox;
            match Outbox::open(&dir, outbox.max_bytes, outbox.fsync_interval, loss_marker()) {
                Err(OutboxError::Locked(_)) if Instant::now() < give_up_at => {
                    if !std::mem::replace(&mut said, true) {
                        warn!(dir = %dir.display(), "the outbox is locked by another pc-eventd; waiting for it to exit");
                    }
                    let pause = tokio::time::sleep(Duration::from_millis(500));
                    if shutdown.run_until_cancelled(pause).await.is_none() {
                        return Ok(None);
                    }
                }
                opened => break opened?,
            }
        };
        let queued = outbox.pending_messages();
        info!(dir = %dir.display(), queued, "outbox open");
        self.status.set_outbox(relay::fill(&outbox));
        Ok(Some(outbox))
    }

    /// Writes an observation's events to the outbox for the relay. Events it cannot take are
    /// counted, logged and reported (readiness, and a loss marker once there is room again).
    fn enqueue(&self, events: &[LifecycleEvent], records: Vec<(String, Option<ProcessRecord>)>) {
        let queue = self.queue.as_ref().expect("run() opens the outbox first");
        let mut outbox = lock(&queue.outbox);
        let pushed = outbox.push(events.iter().map(Message::from).collect(), records);
        if !matches!(pushed, Ok(Pushed::Stored)) {
            let dropped = events.len() as u64;
            self.status.metrics.events_dropped.inc_by(dropped);
            let lost = outbox.loss().map_or(0, |loss| loss.lost);
            match pushed {
                Err(err) => {
                    error!(error = %err, dropped, lost, "cannot write the outbox: events lost")
                }
                _ => error!(
                    dropped,
                    lost,
                    max_bytes = self.config.outbox.max_bytes,
                    "the outbox is full (NATS has been unreachable too long): events lost"
                ),
            }
        }
        self.status.set_outbox(relay::fill(&outbox));
        drop(outbox);
        queue.wake.notify_one();
    }

    /// Reports a new observation to systemd: `READY=1` the first time, then `STATUS=` at most
    /// once a second (a stream can bring hundreds of frames at once).
    fn observed(&self, snapshot: &Snapshot) {
        self.status
            .set_processes(snapshot.len(), snapshot.unhealthy());
        if !self
            .ready_sent
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            notify::ready(&self.status.summary());
            return;
        }
        let mut last = lock(&self.last_status);
        if last.is_none_or(|at| at.elapsed() >= STATUS_EVERY) {
            notify::status(&self.status.summary());
            *last = Some(Instant::now());
        }
    }

    /// One connection to the state stream: catch up through `GET /processes`, subscribe, then
    /// diff every frame until the stream ends, shutdown, or a reload request.
    async fn stream_session(
        &self,
        compose: &ComposeClient,
        snapshot: &mut Snapshot,
        shutdown: &CancellationToken,
        reloads: &mut mpsc::Receiver<()>,
    ) -> SessionEnd {
        // What changed while we were away, and who is there.
        let observed = match self.poll(compose).await {
            Ok(observed) => observed,
            Err(err) => return SessionEnd::Failed(err),
        };
        let (mut subscriptions, mut frames) = match Subscriptions::open(compose, &observed).await {
            Ok(opened) => opened,
            Err(err) => return SessionEnd::Failed(err),
        };
        self.status.set_mode(SourceMode::Stream);
        info!(
            subscriptions = subscriptions.readers.len(),
            processes = observed.len(),
            "streaming process states"
        );
        self.learn_timings(compose, &observed).await;
        self.publish_observation(snapshot, &observed);

        let reconcile_every = self.config.process_compose.reconcile_interval;
        let mut reconcile = tokio::time::interval_at(
            tokio::time::Instant::now() + reconcile_every,
            reconcile_every,
        );
        let pet_every = self.watchdog.interval().unwrap_or(Duration::from_secs(1));
        let mut pet = tokio::time::interval(pet_every);
        let mut readiness = tokio::time::interval(READINESS_CHECK_EVERY);
        loop {
            self.status.expect_within(
                reconcile_every.max(pet_every) + self.config.process_compose.request_timeout,
            );
            tokio::select! {
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                Some(()) = reloads.recv() => return SessionEnd::Reload,
                _ = pet.tick() => self.watchdog.pet(),
                _ = readiness.tick() => self.readiness_overdue(snapshot),
                _ = reconcile.tick() => {
                    if let Err(err) = self.reconcile(compose, snapshot, &mut subscriptions).await {
                        return SessionEnd::Failed(err);
                    }
                }
                message = frames.recv() => match message {
                    Some(Ok(frame)) => {
                        let frame = self.complete_frame(compose, frame).await;
                        self.learn_timings(compose, std::slice::from_ref(&frame.state)).await;
                        self.publish_frame(snapshot, &frame);
                        self.watchdog.pet();
                    }
                    Some(Err(err)) => return SessionEnd::Failed(err),
                    None => unreachable!("the session holds a sender"),
                },
            }
        }
    }

    /// A poll during a stream session: the stream is the authority on known processes (a poll
    /// could be older than frames still queued); the poll adds and removes members, and new
    /// members get their subscription.
    async fn reconcile(
        &self,
        compose: &ComposeClient,
        snapshot: &mut Snapshot,
        subscriptions: &mut Subscriptions,
    ) -> Result<(), ComposeError> {
        let observed = self.poll(compose).await?;
        let members = membership(snapshot, &observed);
        self.learn_timings(compose, &members).await;
        self.publish_observation(snapshot, &members);
        subscriptions.cover(compose, &observed).await
    }

    /// Reports the runs whose readiness grace ran out since the last frame: a stream sends
    /// nothing while a probe keeps failing, so the clock must.
    fn readiness_overdue(&self, snapshot: &mut Snapshot) {
        let overdue = snapshot.readiness_overdue(SystemTime::now(), &self.timings());
        for state in overdue {
            let frame = StateFrame {
                snapshot: false,
                state,
            };
            self.publish_frame(snapshot, &frame);
        }
    }

    /// The `Running` frame of a new incarnation carries no pid and no start time (they are
    /// read before the exec); fetch them, so event ids rest on the real incarnation.
    async fn complete_frame(&self, compose: &ComposeClient, mut frame: StateFrame) -> StateFrame {
        let state = &frame.state;
        if !state.status.is_running() || (state.pid > 0 && state.process_start_time.is_some()) {
            return frame;
        }
        match compose.process(&state.name).await {
            Ok(current) if current.status.is_running() => {
                frame.state.pid = current.pid;
                frame.state.process_start_time = current.process_start_time;
            }
            Ok(_) => {}
            Err(err) => debug!(error = %err, process = %state.name, "cannot complete a frame"),
        }
        frame
    }

    /// Opens the state store beside the stream. On the first open it also loads what the last
    /// run published (a restart resumes from it); after a reload to other NATS settings it
    /// writes the current state there instead. False: not yet, retry after a pause.
    async fn open_state(
        &self,
        publisher: &Publisher,
        snapshot: &mut Snapshot,
        shutdown: &CancellationToken,
    ) -> bool {
        let bucket = format!("{}_STATE", self.config.nats.stream.name);
        let source = self.config.process_compose.source();
        let replicas = self.config.nats.stream.replicas;
        let opened = StateStore::open(publisher.jetstream(), &bucket, replicas, &source);
        let Some(opened) = shutdown.run_until_cancelled(opened).await else {
            return false;
        };
        let loaded = match opened {
            Ok(store) if self.state_loaded.load(std::sync::atomic::Ordering::Relaxed) => {
                let mut store = store;
                store
                    .save(snapshot.records(snapshot.names().cloned()))
                    .await;
                Ok(store)
            }
            Ok(store) => store.load().await.map(|loaded| {
                *snapshot = loaded;
                // What the last run observed but NATS has not acknowledged yet.
                let queue = self.queue.as_ref().expect("run() opens the outbox first");
                let outbox = lock(&queue.outbox);
                snapshot.overlay(outbox.pending_records());
                info!(bucket = %bucket, processes = snapshot.len(), queued = outbox.pending_messages(), "resuming from the last published state and the outbox");
                store
            }),
            Err(err) => Err(err),
        };
        match loaded {
            Ok(store) => {
                *self.state.lock().await = Some(store);
                self.state_loaded
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(err) => {
                warn!(error = %err, "waiting for the state bucket");
                self.status.set_stream(Err(err.to_string()));
                let wait = Duration::from_secs(1);
                self.status.expect_within(wait);
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = self.watchdog.sleep(wait) => {}
                }
                false
            }
        }
    }

    /// Tries once to make the stream right. `Ok(false)`: not yet (NATS unreachable), retry after
    /// a pause; an error: a mismatch retrying cannot fix.
    async fn ensure_stream(
        &self,
        publisher: &Publisher,
        shutdown: &CancellationToken,
    ) -> Result<bool, PublishError> {
        let stream = &self.config.nats.stream;
        self.status.expect_within(self.config.nats.ack_timeout);
        let Some(ensured) = shutdown
            .run_until_cancelled(publisher.ensure_stream(stream))
            .await
        else {
            return Ok(false);
        };
        match ensured {
            Ok(outcome) => {
                info!(stream = %stream.name, ?outcome, "stream ready");
                self.status.set_stream(Ok(()));
                Ok(true)
            }
            Err(
                err @ (PublishError::StreamMismatch { .. } | PublishError::StorageMismatch { .. }),
            ) => {
                self.status.set_stream(Err(err.to_string()));
                Err(err)
            }
            Err(err) => {
                warn!(error = %err, "waiting for NATS JetStream");
                self.status.set_stream(Err(err.to_string()));
                let wait = retry::jittered_delay(1, NATS_RETRY_MIN, NATS_RETRY_MAX)
                    .max(Duration::from_secs(1));
                self.status.expect_within(wait);
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = self.watchdog.sleep(wait) => {}
                }
                Ok(false)
            }
        }
    }

    /// Re-reads the configuration and applies what changed; a bad one keeps the old.
    async fn reload(
        &mut self,
        compose: &mut ComposeClient,
        publisher: &mut Publisher,
        health: &mut Option<HealthServer>,
    ) -> Changed {
        notify::reloading();
        let changed = match self.apply_reload(compose, publisher, health).await {
            Ok(changed) => {
                info!(?changed, "configuration reloaded");
                self.status.metrics.reloaded(true);
                self.status.set_reload_error(None);
                changed
            }
            Err(err) => {
                error!(error = %err, "reload failed, the running configuration stays in force");
                self.status.metrics.reloaded(false);
                let first = err
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                self.status.set_reload_error(Some(first));
                Changed::default()
            }
        };
        notify::ready(&self.status.summary());
        changed
    }

    async fn apply_reload(
        &mut self,
        compose: &mut ComposeClient,
        publisher: &mut Publisher,
        health: &mut Option<HealthServer>,
    ) -> Result<Changed, DaemonError> {
        let new = (self.loader)()?;
        let old = std::mem::replace(&mut self.config, new.clone());
        let result = async {
            let changed = Changed::between(&old, &new);
            // Build everything that can fail before replacing anything.
            let new_compose = new.process_compose.client().map_err(ConfigError::from)?;
            let new_publisher = if changed.nats {
                Some(self.connect().await?)
            } else {
                None
            };
            // The new endpoint binds while the old one still serves (a changed address, or
            // one of them disabled, so the two never want the same port).
            let new_health = if changed.health {
                Some(start_health(&new.health, &self.status).await?)
            } else {
                None
            };
            *compose = new_compose;
            if let Some(new_publisher) = new_publisher {
                *publisher = new_publisher;
            }
            if let Some(new_health) = new_health
                && let Some(old_health) = std::mem::replace(health, new_health)
            {
                old_health.stop.cancel();
                let _ = old_health.task.await;
            }
            if changed.log_level
                && let Some(log) = &self.log
            {
                log.set_level(&new.log.level);
            }
            self.timings().fixed_readiness_grace = new.process_compose.readiness_grace;
            Ok(changed)
        }
        .await;
        if result.is_err() {
            self.config = old;
        }
        result
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy)]
struct Changed {
    nats: bool,
    stream: bool,
    health: bool,
    log_level: bool,
}

impl Changed {
    fn between(old: &Config, new: &Config) -> Self {
        // Everything about the connection: servers, timeouts, credentials, TLS. Files named
        // there (seed, creds, certificates) may have been rotated in place, so a reload with
        // any of them set reconnects to read them again.
        let connection = |nats: &NatsConfig| NatsConfig {
            subject_prefix: String::new(),
            stream: StreamConfig::default(),
            ..nats.clone()
        };
        let n = &new.nats;
        let reads_files = n.nkey_seed_file.is_some()
            || n.creds_file.is_some()
            || n.tls_ca_file.is_some()
            || n.tls_cert_file.is_some();
        let nats = connection(&old.nats) != connection(n) || reads_files;
        Self {
            nats,
            // A new connection re-checks the stream too; so does a new subject prefix.
            stream: nats
                || old.nats.stream != new.nats.stream
                || old.nats.subject_prefix != new.nats.subject_prefix,
            health: old.health != new.health,
            log_level: old.log.level != new.log.level,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_reconnect_only_what_changed() {
        let old = Config::default();
        let mut new = old.clone();
        new.process_compose.poll_interval = Duration::from_millis(300);
        let changed = Changed::between(&old, &new);
        assert!(!changed.nats && !changed.stream && !changed.health && !changed.log_level);

        new.nats.stream.max_age = Duration::from_secs(60);
        let changed = Changed::between(&old, &new);
        assert!(changed.stream && !changed.nats);

        new.nats.url = "nats://127.0.0.1:4333".into();
        new.log.level = "debug".into();
        let changed = Changed::between(&old, &new);
        assert!(changed.nats && changed.stream && changed.log_level && !changed.health);

        let mut credentials = old.clone();
        credentials.nats.user = Some("events".into());
        assert!(Changed::between(&old, &credentials).nats);
        let mut rotated = old.clone();
        rotated.nats.tls_ca_file = Some("/etc/pc-eventd/ca.pem".into());
        assert!(
            Changed::between(&rotated, &rotated).nats,
            "files are read again"
        );
    }
}
