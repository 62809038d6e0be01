//! Observing: one turn of the stream or poll loop, and the way from an observation through the
//! diff to the outbox.

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use pc_eventd_events::event::{EventType, LifecycleEvent, SubjectScheme};
use pc_eventd_events::process_compose::model::{
    ProcessInfo, ProcessState, ProcessStatus, Readiness,
};
use pc_eventd_events::process_compose::{ComposeClient, ComposeError};
use pc_eventd_events::publish::Message;
use pc_eventd_events::retry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Control, Daemon, Observing, Turn};
use crate::delivery::outbox::Pushed;
use crate::delivery::relay;
use crate::diff::{
    DiffContext, ProcessRecord, ProcessSettings, ProcessView, Snapshot, diff, diff_one,
};
use crate::ops::notify;
use crate::ops::process_metrics::{ProcessGauges, SeriesPolicy};
use crate::source::{Frames, SourceMode, StateFrame, Subscriptions};
use crate::sync::lock;

/// Shortest interval between two `STATUS=` updates driven by observations.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How often a stream session looks for runs whose readiness grace ran out (no frame says so),
/// and reports an observation that came too soon after the last `STATUS=`.
const READINESS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Process settings read at once from process-compose.
const INFO_READS_IN_FLIGHT: usize = 8;

/// How a stream session ended.
enum SessionEnd {
    Shutdown,
    Reload,
    Failed(ComposeError),
}

/// What the gauges say of a process.
fn process_gauges(view: ProcessView<'_>) -> ProcessGauges {
    let state = view.state;
    ProcessGauges {
        namespace: state.primary_namespace().to_owned(),
        name: state.name.clone(),
        up: state.status.normalized().is_running(),
        ready: state
            .has_ready_probe
            .then_some(state.is_ready == Readiness::Ready),
        restarts: state.restarts,
        exit_code: state.exit_code,
        usage: view.usage.map(|usage| (usage.mem, usage.cpu)),
        under_pressure: view.under_pressure.iter().map(|r| r.as_str()).collect(),
        given_up: view.given_up,
    }
}

/// The processes of `observed`, with the state `snapshot` already has for those it knows: a
/// diff against it reports only processes that appeared or disappeared, and the conditions
/// read from the fresh usage and output times.
fn membership(snapshot: &Snapshot, observed: &[ProcessState]) -> Vec<ProcessState> {
    observed
        .iter()
        .map(|p| match snapshot.state_of(&p.name) {
            Some(known) => ProcessState {
                mem: p.mem,
                cpu: p.cpu,
                last_activity_time: p.last_activity_time.clone(),
                ..known.clone()
            },
            None => p.clone(),
        })
        .collect()
}

impl Daemon {
    /// One session on process-compose's state stream, and what its end asks for.
    pub(super) async fn stream_turn(
        &mut self,
        observing: &mut Observing,
        control: &mut Control,
    ) -> Turn {
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
    pub(super) async fn poll_turn(
        &self,
        observing: &mut Observing,
        shutdown: &CancellationToken,
    ) -> Turn {
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
                self.learn_settings(&observing.compose, &observed).await;
                self.publish_observation(&observing.compose, &mut observing.snapshot, &observed)
                    .await;
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
        settings: &'a ProcessSettings,
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
            // Only full observations come from `GET /processes`; frames carry stale usage.
            sampled: synthetic,
            settings,
        }
    }

    pub(super) fn settings(&self) -> std::sync::MutexGuard<'_, ProcessSettings> {
        lock(&self.settings)
    }

    /// Reads the settings of the processes in `observed` not read yet (once each): the
    /// readiness probe, the restart policy, `monitor_for`. Unreadable settings leave the
    /// defaults (a 60 s readiness grace, a 1 s backoff, no `given_up`) and are tried again at
    /// the next observation.
    async fn learn_settings(&self, compose: &ComposeClient, observed: &[ProcessState]) {
        let unknown: Vec<String> = {
            let settings = self.settings();
            observed
                .iter()
                .filter(|p| !settings.knows(&p.name))
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
        let mut settings = self.settings();
        for (name, info) in learned {
            settings.learn(&name, info);
        }
    }

    /// Gives each `crashed` event the last output of its process, read at once for all of
    /// them, each within `crash_output.read_timeout`.
    async fn attach_output(&self, compose: &ComposeClient, events: &mut [LifecycleEvent]) {
        let config = &self.config.crash_output;
        let reads = events
            .iter_mut()
            .filter(|e| {
                e.event_type == EventType::Crashed && config.reads(&e.namespace, &e.process)
            })
            .map(|event| async move {
                event.output = Some(config.read(compose, &event.process).await);
            });
        futures::future::join_all(reads).await;
    }

    /// Diffs a full observation (a poll, a reconnect) against `snapshot`, queues the events
    /// with the records they leave behind, and advances the snapshot.
    async fn publish_observation(
        &self,
        compose: &ComposeClient,
        snapshot: &mut Snapshot,
        observed: &[ProcessState],
    ) {
        let source = self.config.process_compose.source();
        let subjects = self.config.nats.subjects();
        let (next, mut events) = {
            let settings = self.settings();
            let ctx = self.diff_context(&source, &subjects, true, &settings);
            diff(snapshot, observed, &ctx)
        };
        self.attach_output(compose, &mut events).await;
        let records = next.records(snapshot.changed_names(&next));
        *snapshot = next;
        self.enqueue(&events, records);
        self.observed(snapshot);
    }

    /// Like [`Daemon::publish_observation`] for one stream frame.
    async fn publish_frame(
        &self,
        compose: &ComposeClient,
        snapshot: &mut Snapshot,
        frame: &StateFrame,
    ) {
        let source = self.config.process_compose.source();
        let subjects = self.config.nats.subjects();
        let (update, mut events) = {
            let settings = self.settings();
            let ctx = self.diff_context(&source, &subjects, frame.snapshot, &settings);
            diff_one(snapshot, &frame.state, &ctx)
        };
        self.attach_output(compose, &mut events).await;
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

    /// Writes an observation's events to the outbox for the relay. Events it cannot take are
    /// counted, logged and reported (readiness, and a loss marker once there is room again).
    fn enqueue(&self, events: &[LifecycleEvent], records: Vec<(String, Option<ProcessRecord>)>) {
        let queue = self.queue.as_ref().expect("run() opens the outbox first");
        let mut outbox = lock(&queue.outbox);
        let pushed = outbox.push(events.iter().map(Message::of).collect(), records);
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

    /// Reports a new observation to systemd: `READY=1` the first time, then `STATUS=` (see
    /// [`Daemon::report_status`]). The process gauges follow at the same pace.
    fn observed(&self, snapshot: &Snapshot) {
        self.status
            .set_processes(snapshot.len(), snapshot.unhealthy());
        if !self
            .ready_sent
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.update_process_gauges(snapshot);
            notify::ready(&self.status.summary());
            return;
        }
        self.status_pending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.report_status(snapshot);
    }

    /// `STATUS=` and the process gauges, at most once a second (a stream can bring hundreds of
    /// frames at once). An observation that came sooner is reported by the next call: the next
    /// observation, or the stream session's tick, so the last change of a burst is not left
    /// unreported until the next reconcile.
    fn report_status(&self, snapshot: &Snapshot) {
        use std::sync::atomic::Ordering;
        if !self.status_pending.load(Ordering::Relaxed) {
            return;
        }
        let mut last = lock(&self.last_status);
        if last.is_none_or(|at| at.elapsed() >= STATUS_EVERY) {
            self.status_pending.store(false, Ordering::Relaxed);
            self.update_process_gauges(snapshot);
            notify::status(&self.status.summary());
            *last = Some(Instant::now());
        }
    }

    fn update_process_gauges(&self, snapshot: &Snapshot) {
        let gauges: Vec<ProcessGauges> = snapshot.views().map(process_gauges).collect();
        let health = &self.config.health;
        let policy = SeriesPolicy {
            enabled: health.process_metrics,
            limit: health.process_metrics_limit,
        };
        let source = self.config.process_compose.source();
        self.status
            .metrics
            .process_gauges
            .update(&source, &gauges, policy);
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
        let (mut subscriptions, mut frames) = match self.open_session(compose, snapshot).await {
            Ok(opened) => opened,
            Err(err) => return SessionEnd::Failed(err),
        };
        let reconcile_every = self.reconcile_interval();
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
                _ = readiness.tick() => {
                    self.readiness_overdue(compose, snapshot).await;
                    self.report_status(snapshot);
                }
                _ = reconcile.tick() => {
                    if let Err(err) = self.reconcile(compose, snapshot, &mut subscriptions).await {
                        return SessionEnd::Failed(err);
                    }
                }
                message = frames.recv() => match message {
                    Some(Ok(frame)) => self.on_frame(compose, snapshot, frame).await,
                    Some(Err(err)) => return SessionEnd::Failed(err),
                    None => unreachable!("the session holds a sender"),
                },
            }
        }
    }

    /// Starts a stream session: reads what changed while the stream was away and who is there
    /// (one poll), publishes it, and subscribes.
    async fn open_session(
        &self,
        compose: &ComposeClient,
        snapshot: &mut Snapshot,
    ) -> Result<(Subscriptions, Frames), ComposeError> {
        let observed = self.poll(compose).await?;
        let (subscriptions, frames) = Subscriptions::open(compose, &observed).await?;
        self.status.set_mode(SourceMode::Stream);
        info!(
            subscriptions = subscriptions.open_count(),
            processes = observed.len(),
            "streaming process states"
        );
        self.learn_settings(compose, &observed).await;
        self.publish_observation(compose, snapshot, &observed).await;
        Ok((subscriptions, frames))
    }

    /// One frame of the stream: completed, its process's settings learned, diffed and published.
    async fn on_frame(&self, compose: &ComposeClient, snapshot: &mut Snapshot, frame: StateFrame) {
        let frame = self.complete_frame(compose, frame).await;
        self.learn_settings(compose, std::slice::from_ref(&frame.state))
            .await;
        self.publish_frame(compose, snapshot, &frame).await;
        self.watchdog.pet();
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
        self.learn_settings(compose, &members).await;
        self.publish_observation(compose, snapshot, &members).await;
        subscriptions.cover(compose, &observed).await
    }

    /// Reports the runs whose readiness grace ran out since the last frame: a stream sends
    /// nothing while a probe keeps failing, so the clock must.
    async fn readiness_overdue(&self, compose: &ComposeClient, snapshot: &mut Snapshot) {
        let overdue = {
            let settings = self.settings();
            snapshot.readiness_overdue(SystemTime::now(), &settings)
        };
        for state in overdue {
            let frame = StateFrame {
                snapshot: false,
                state,
            };
            self.publish_frame(compose, snapshot, &frame).await;
        }
    }

    /// How often a stream session reads `GET /processes`: for membership, and as often as the
    /// conditions and the per-process metrics need fresh usage when they are on.
    fn reconcile_interval(&self) -> Duration {
        let reconcile = self.config.process_compose.reconcile_interval;
        let monitors_silence = !self.settings().monitor_silence.is_empty();
        let samples = !self.config.conditions.is_empty()
            || self.config.health.process_metrics
            || monitors_silence;
        if samples {
            reconcile.min(self.config.conditions.sample_interval)
        } else {
            reconcile
        }
    }

    /// The `Running` frame of a new incarnation carries no pid and no start time (they are
    /// read before the exec), and no frame carries the file watcher's trigger: fetch them for a
    /// start and for a stop, so event ids rest on the real incarnation and a watcher's restart
    /// is told from others (its stop may end in a `Completed` frame before the start).
    async fn complete_frame(&self, compose: &ComposeClient, mut frame: StateFrame) -> StateFrame {
        let state = &frame.state;
        let stopping = state.status == ProcessStatus::Terminating;
        let incomplete_start =
            state.status.is_running() && (state.pid <= 0 || state.process_start_time.is_none());
        if !stopping && !incomplete_start {
            return frame;
        }
        match compose.process(&state.name).await {
            Ok(current) => {
                if incomplete_start && current.status.is_running() {
                    frame.state.pid = current.pid;
                    frame.state.process_start_time = current.process_start_time;
                }
                frame.state.watch_trigger_time = current.watch_trigger_time;
            }
            Err(err) => debug!(error = %err, process = %state.name, "cannot complete a frame"),
        }
        frame
    }
}
