//! The daemon: the poll → diff → publish loop and its lifecycle (readiness, reload, stop).
//!
//! One loop does everything in order: make sure the stream is right, poll `GET /processes`, diff
//! against what was last published, publish each event and wait for its ack, then sleep. The
//! snapshot only advances once every event of an observation is acknowledged, so a NATS outage
//! delays events instead of dropping them. A reload (SIGHUP) swaps only what changed and keeps
//! the snapshot, so no event is lost or repeated across it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::compose::{ComposeClient, ComposeError};
use crate::config::{Config, ConfigError, HealthConfig};
use crate::diff::{DiffContext, Snapshot, diff};
use crate::event::LifecycleEvent;
use crate::logging::LogHandle;
use crate::notify::{self, Watchdog};
use crate::process::{ProcessState, Readiness};
use crate::publish::{PublishError, Publisher};
use crate::status::Status;

/// Shortest and longest wait between two attempts to reach NATS.
const NATS_RETRY_MIN: Duration = Duration::from_millis(200);
const NATS_RETRY_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Publish(#[from] PublishError),
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
}

/// The running health endpoint.
struct HealthServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Daemon {
    pub fn new(config: Config, loader: ConfigLoader, status: Arc<Status>) -> Self {
        Self {
            config,
            loader,
            status,
            watchdog: Watchdog::from_env(),
            log: None,
        }
    }

    /// Lets a reload change the log level.
    pub fn with_log_handle(mut self, log: Option<LogHandle>) -> Self {
        self.log = log;
        self
    }

    /// Runs until `control.shutdown` is cancelled.
    pub async fn run(mut self, mut control: Control) -> Result<(), DaemonError> {
        let mut compose = ComposeClient::from_config(&self.config)?;
        let mut publisher = self.connect().await?;
        let mut health = start_health(&self.config.health, &self.status).await?;
        let shutdown = control.shutdown.clone();
        info!(
            source = %self.config.process_compose.source(),
            nats = %self.config.nats.url,
            poll_interval = ?self.config.process_compose.poll_interval,
            watchdog = ?self.watchdog.interval(),
            "pc-eventd running"
        );
        notify::status("waiting for NATS JetStream and process-compose");

        let mut snapshot = Snapshot::default();
        let mut stream_ready = false;
        let mut ready_sent = false;
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            if !stream_ready {
                stream_ready = self.ensure_stream(&publisher, &shutdown).await?;
                continue;
            }
            // A poll changes nothing until it returns, so it can be abandoned at shutdown.
            let polled = tokio::select! {
                () = shutdown.cancelled() => break,
                polled = self.poll(&compose) => polled,
            };
            let wait = match polled {
                Ok(observed) => {
                    if failures > 0 {
                        info!(
                            after_failures = failures,
                            "process-compose is answering again"
                        );
                    }
                    failures = 0;
                    let source = self.config.process_compose.source();
                    let subjects = self.config.nats.subjects();
                    let ctx = DiffContext {
                        source: &source,
                        subjects: &subjects,
                        observed_at: SystemTime::now(),
                        synthetic: true,
                    };
                    let (next, events) = diff(&snapshot, &observed, &ctx);
                    if !self.publish_all(&publisher, &events, &shutdown).await {
                        break;
                    }
                    snapshot = next;
                    let unhealthy = observed
                        .iter()
                        .filter(|p| p.is_ready == Readiness::NotReady)
                        .count();
                    self.status.set_processes(observed.len(), unhealthy);
                    if ready_sent {
                        notify::status(&self.status.summary());
                    } else {
                        notify::ready(&self.status.summary());
                        ready_sent = true;
                    }
                    self.config.process_compose.poll_interval
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let pc = &self.config.process_compose;
                    let wait = backoff(failures, pc.poll_interval, pc.max_backoff);
                    warn!(error = %err, kind = err.kind(), consecutive = failures, retry_in = ?wait, "poll failed");
                    notify::status(&self.status.summary());
                    wait
                }
            };
            self.watchdog.pet();
            self.status.expect_within(wait);
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(()) = control.reloads.recv() => {
                    let changed = self.reload(&mut compose, &mut publisher, &mut health).await;
                    stream_ready &= !changed.stream;
                }
                () = self.watchdog.sleep(wait) => {}
            }
        }

        notify::stopping();
        info!("pc-eventd stopping");
        if let Some(health) = health {
            health.stop.cancel();
            let _ = health.task.await;
        }
        Ok(())
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

    /// Tries once to make the stream right. `Ok(false)`: not yet (NATS unreachable), retry after
    /// a pause; an error: a mismatch retrying cannot fix.
    async fn ensure_stream(
        &self,
        publisher: &Publisher,
        shutdown: &CancellationToken,
    ) -> Result<bool, PublishError> {
        let stream = &self.config.nats.stream;
        self.status.expect_within(self.config.nats.ack_timeout);
        match publisher.ensure_stream(stream).await {
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
                let wait = backoff(1, NATS_RETRY_MIN, NATS_RETRY_MAX).max(Duration::from_secs(1));
                self.status.expect_within(wait);
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = self.watchdog.sleep(wait) => {}
                }
                Ok(false)
            }
        }
    }

    /// Publishes events in order, each retried with the same id until JetStream acknowledges it.
    /// After shutdown is requested, retries go on for `daemon.shutdown_timeout`; returns false
    /// if events were left unpublished.
    async fn publish_all(
        &self,
        publisher: &Publisher,
        events: &[LifecycleEvent],
        shutdown: &CancellationToken,
    ) -> bool {
        let metrics = &self.status.metrics;
        let mut give_up_at: Option<tokio::time::Instant> = None;
        for (done, event) in events.iter().enumerate() {
            let span = info_span!("publish", subject = %event.subject, id = %event.id);
            let mut attempt = 0;
            loop {
                self.status.expect_within(self.config.nats.ack_timeout);
                match publisher.publish(event).instrument(span.clone()).await {
                    Ok(published) => {
                        self.status.set_publish(Ok(()));
                        if published.duplicate {
                            metrics.events_deduplicated.inc();
                            debug!(parent: &span, seq = published.stream_sequence, "already in the stream");
                        } else {
                            metrics.published(event.event_type);
                            debug!(parent: &span, seq = published.stream_sequence, summary = %event.summary(), "published");
                        }
                        break;
                    }
                    Err(err) => {
                        metrics.publish_errors.inc();
                        self.status.set_publish(Err(err.to_string()));
                        attempt += 1;
                        let wait = backoff(attempt, NATS_RETRY_MIN, NATS_RETRY_MAX);
                        warn!(parent: &span, error = %err, retry_in = ?wait, "publish failed, will retry with the same id");
                        if shutdown.is_cancelled() && give_up_at.is_none() {
                            give_up_at = Some(
                                tokio::time::Instant::now() + self.config.daemon.shutdown_timeout,
                            );
                        }
                        if give_up_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                            let dropped = events.len() - done;
                            metrics.events_dropped.inc_by(dropped as u64);
                            error!(dropped, "shutting down with events NATS never acknowledged");
                            return false;
                        }
                        self.status.expect_within(wait);
                        tokio::select! {
                            () = shutdown.cancelled(), if give_up_at.is_none() => {}
                            () = self.watchdog.sleep(wait) => {}
                        }
                    }
                }
            }
            self.watchdog.pet();
        }
        true
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
            let new_compose = ComposeClient::from_config(&new)?;
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
        let nats = old.nats.url != new.nats.url
            || old.nats.connect_timeout != new.nats.connect_timeout
            || old.nats.ack_timeout != new.nats.ack_timeout;
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
    let task = tokio::spawn(crate::health::serve(listener, status.clone(), stop.clone()));
    Ok(Some(HealthServer { stop, task }))
}

/// Capped exponential backoff with equal jitter: half the step is fixed, half random, so that
/// many daemons restarted together do not retry in lockstep.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let step = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    step / 2 + (step / 2).mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(30);
        for attempt in 1..40 {
            let wait = backoff(attempt, base, max);
            let step = (base * 2u32.pow(attempt.saturating_sub(1).min(20))).min(max);
            assert!(
                wait >= step / 2 && wait <= step,
                "attempt {attempt}: {wait:?}"
            );
        }
        assert!(backoff(1, base, max) <= base);
        assert!(backoff(10, base, max) >= max / 2);
    }

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
    }
}
