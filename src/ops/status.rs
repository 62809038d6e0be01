//! What the daemon knows about its own health: readiness of each part, Prometheus metrics, and
//! the one-line summary for systemd's `STATUS=`. Shared by the loop (which writes) and the HTTP
//! endpoint (which reads).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pc_eventd_events::event::EventType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::process_metrics::ProcessMetrics;
use crate::source::SourceMode;
use crate::sync::lock;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// The daemon's Prometheus metrics (names are prefixed `pc_eventd_` on export).
#[derive(Debug)]
pub struct Metrics {
    pub events_published: Family<TypeLabel, Counter>,
    pub events_deduplicated: Counter,
    pub events_dropped: Counter,
    pub publish_errors: Counter,
    pub polls: Counter,
    pub poll_errors: Family<KindLabel, Counter>,
    pub malformed_responses: Counter,
    pub upstream_latency: Histogram,
    pub seconds_since_last_good_poll: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub nats_connected: Gauge,
    pub nats_reconnects: Counter,
    pub reloads: Family<ResultLabel, Counter>,
    pub processes: Gauge,
    pub source_mode: Family<ModeLabel, Gauge>,
    pub outbox_messages: Gauge,
    pub outbox_bytes: Gauge,
    /// The processes' own gauges.
    pub process_gauges: ProcessMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: String,
}

impl Metrics {
    fn new() -> Self {
        Self {
            events_published: Family::default(),
            events_deduplicated: Counter::default(),
            events_dropped: Counter::default(),
            publish_errors: Counter::default(),
            polls: Counter::default(),
            poll_errors: Family::default(),
            malformed_responses: Counter::default(),
            // 1 ms … ~16 s
            upstream_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            seconds_since_last_good_poll: Gauge::default(),
            nats_connected: Gauge::default(),
            nats_reconnects: Counter::default(),
            reloads: Family::default(),
            processes: Gauge::default(),
            source_mode: Family::default(),
            outbox_messages: Gauge::default(),
            outbox_bytes: Gauge::default(),
            process_gauges: ProcessMetrics::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        self.register_events(registry);
        self.register_source(registry);
        self.register_nats(registry);
        self.register_daemon(registry);
        self.process_gauges.register(registry);
    }

    /// Events: stored, deduplicated, dropped, failed publishes.
    fn register_events(&self, registry: &mut Registry) {
        registry.register(
            "events_published",
            "Events JetStream stored, by type",
            self.events_published.clone(),
        );
        registry.register(
            "events_deduplicated",
            "Publishes JetStream acknowledged as duplicates of a stored event id",
            self.events_deduplicated.clone(),
        );
        registry.register(
            "events_dropped",
            "Events lost: dropped because the outbox was full, or could not be written",
            self.events_dropped.clone(),
        );
        registry.register(
            "publish_errors",
            "Failed publish attempts (each is retried with the same id)",
            self.publish_errors.clone(),
        );
    }

    /// process-compose: polls, failures, malformed answers, latency.
    fn register_source(&self, registry: &mut Registry) {
        registry.register(
            "polls",
            "Successful polls of process-compose",
            self.polls.clone(),
        );
        registry.register(
            "poll_errors",
            "Failed polls of process-compose, by kind",
            self.poll_errors.clone(),
        );
        registry.register(
            "malformed_responses",
            "process-compose responses that could not be decoded",
            self.malformed_responses.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Duration of requests to process-compose",
            self.upstream_latency.clone(),
        );
        registry.register(
            "seconds_since_last_good_poll",
            "Seconds since process-compose last answered a poll (-1: never)",
            self.seconds_since_last_good_poll.clone(),
        );
    }

    /// The NATS connection.
    fn register_nats(&self, registry: &mut Registry) {
        registry.register(
            "nats_connected",
            "1 while the NATS connection is up",
            self.nats_connected.clone(),
        );
        registry.register(
            "nats_reconnects",
            "NATS reconnections after the first connection",
            self.nats_reconnects.clone(),
        );
    }

    /// The daemon itself: reloads, how states arrive, the outbox, the processes it sees.
    fn register_daemon(&self, registry: &mut Registry) {
        registry.register(
            "reloads",
            "Configuration reloads, by result (ok, failed)",
            self.reloads.clone(),
        );
        registry.register(
            "source_mode",
            "1 for the way states currently arrive (stream or poll)",
            self.source_mode.clone(),
        );
        registry.register(
            "outbox_messages",
            "Messages in the outbox, waiting for JetStream to acknowledge them",
            self.outbox_messages.clone(),
        );
        registry.register(
            "outbox_bytes",
            "Bytes of the outbox's unacknowledged entries (outbox.max_bytes is the limit)",
            self.outbox_bytes.clone(),
        );
        registry.register(
            "processes",
            "Processes process-compose reported at the last poll",
            self.processes.clone(),
        );
    }

    /// Counts a stored message of type `kind` (an event type, or `events_lost`).
    pub fn published(&self, kind: &str) {
        self.events_published
            .get_or_create(&TypeLabel {
                r#type: kind.to_owned(),
            })
            .inc();
    }

    pub fn poll_failed(&self, kind: &str) {
        self.poll_errors
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Total failed polls of every kind.
    pub fn poll_errors_total(&self) -> u64 {
        pc_eventd_events::process_compose::ComposeError::KINDS
            .iter()
            .map(|kind| {
                self.poll_errors
                    .get_or_create(&KindLabel {
                        kind: (*kind).to_owned(),
                    })
                    .get()
            })
            .sum()
    }

    /// Total events stored, every type.
    pub fn published_total(&self) -> u64 {
        EventType::ALL
            .iter()
            .map(|t| {
                self.events_published
                    .get_or_create(&TypeLabel {
                        r#type: t.as_str().to_owned(),
                    })
                    .get()
            })
            .sum()
    }
}

/// How full the outbox is, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFill {
    /// Messages waiting for JetStream.
    pub messages: usize,
    /// Their bytes.
    pub bytes: u64,
    /// While it is losing events: how many so far, and since when.
    pub losing: Option<(u64, std::time::SystemTime)>,
}

/// One part of readiness: fine, or failing with a reason.
pub(crate) type Part = Result<(), String>;

/// Readiness by part; `/readyz` is 200 only when every part is fine.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessParts {
    pub process_compose: Part,
    pub nats: Part,
    pub stream: Part,
    pub publish: Part,
    /// Failing while the outbox is full (events are being dropped) or cannot be written.
    pub outbox: Part,
}

impl ReadinessParts {
    pub fn is_ready(&self) -> bool {
        self.failing().is_empty()
    }

    /// The failing parts with their reasons.
    pub fn failing(&self) -> BTreeMap<&'static str, String> {
        [
            ("process_compose", &self.process_compose),
            ("nats", &self.nats),
            ("stream", &self.stream),
            ("publish", &self.publish),
            ("outbox", &self.outbox),
        ]
        .into_iter()
        .filter_map(|(name, part)| part.as_ref().err().map(|e| (name, e.clone())))
        .collect()
    }
}

/// Everything the loop reports about itself.
#[derive(Debug)]
pub struct Status {
    pub metrics: Metrics,
    registry: Registry,
    readiness: Mutex<ReadinessParts>,
    last_good_poll: Mutex<Option<Instant>>,
    last_event: Mutex<Option<Instant>>,
    unhealthy: Mutex<usize>,
    /// A reload that failed, until the next one succeeds.
    reload_error: Mutex<Option<String>>,
    /// How states arrive now (stream or poll); unset until the first observation.
    mode: Mutex<Option<SourceMode>>,
    /// When the event loop said it would be back at the latest (see [`Status::expect_within`]).
    loop_deadline: Mutex<Option<Instant>>,
    /// Which NATS connection's events count (see [`Status::new_nats_connection`]).
    nats_generation: std::sync::atomic::AtomicU64,
}

/// Grace on top of the loop's own promise before it is called stuck.
const LOOP_SLACK: Duration = Duration::from_secs(5);

impl Default for Status {
    fn default() -> Self {
        let metrics = Metrics::new();
        let mut registry = Registry::with_prefix("pc_eventd");
        metrics.register(&mut registry);
        Self {
            metrics,
            registry,
            readiness: Mutex::new(ReadinessParts {
                process_compose: Err("not polled yet".into()),
                nats: Err("connecting".into()),
                stream: Err("not checked yet".into()),
                publish: Ok(()),
                outbox: Ok(()),
            }),
            last_good_poll: Mutex::new(None),
            last_event: Mutex::new(None),
            unhealthy: Mutex::new(0),
            reload_error: Mutex::new(None),
            mode: Mutex::new(None),
            loop_deadline: Mutex::new(None),
            nats_generation: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Status {
    pub fn readiness(&self) -> ReadinessParts {
        lock(&self.readiness).clone()
    }

    pub fn set_process_compose(&self, part: Part) {
        if part.is_ok() {
            *lock(&self.last_good_poll) = Some(Instant::now());
        }
        lock(&self.readiness).process_compose = part;
    }

    /// Starts reporting on a new NATS connection; returns its generation for [`Status::set_nats`].
    pub fn new_nats_connection(&self) -> u64 {
        let generation = self
            .nats_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.metrics.nats_connected.set(0);
        lock(&self.readiness).nats = Err("connecting".into());
        generation
    }

    /// Records the state of NATS connection `generation`, unless a newer one replaced it.
    pub fn set_nats(&self, generation: u64, part: Part) {
        let mut readiness = lock(&self.readiness);
        if generation
            != self
                .nats_generation
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.metrics.nats_connected.set(i64::from(part.is_ok()));
        readiness.nats = part;
    }

    pub fn set_stream(&self, part: Part) {
        lock(&self.readiness).stream = part;
    }

    pub fn set_publish(&self, part: Part) {
        if part.is_ok() {
            *lock(&self.last_event) = Some(Instant::now());
        }
        lock(&self.readiness).publish = part;
    }

    /// What the outbox holds, and whether it is losing events.
    pub fn set_outbox(&self, fill: OutboxFill) {
        let metrics = &self.metrics;
        metrics
            .outbox_messages
            .set(i64::try_from(fill.messages).unwrap_or(i64::MAX));
        metrics
            .outbox_bytes
            .set(i64::try_from(fill.bytes).unwrap_or(i64::MAX));
        lock(&self.readiness).outbox = match fill.losing {
            None => Ok(()),
            Some((lost, since)) => Err(format!(
                "full or unwritable: {lost} events lost since {}",
                pc_eventd_events::event::timestamp(since)
            )),
        };
    }

    pub fn set_processes(&self, total: usize, unhealthy: usize) {
        self.metrics
            .processes
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        *lock(&self.unhealthy) = unhealthy;
    }

    /// The event loop's promise: its next step ends within `duration` (a request's timeout, a
    /// sleep's length).
    pub fn expect_within(&self, duration: Duration) {
        *lock(&self.loop_deadline) = Some(Instant::now() + duration);
    }

    /// False once the loop has overrun its promise by more than a few seconds.
    pub fn loop_alive(&self) -> bool {
        lock(&self.loop_deadline).is_none_or(|deadline| Instant::now() <= deadline + LOOP_SLACK)
    }

    pub fn set_mode(&self, mode: SourceMode) {
        let mut current = lock(&self.mode);
        if *current == Some(mode) {
            return;
        }
        for other in [SourceMode::Stream, SourceMode::Poll] {
            let label = ModeLabel {
                mode: other.as_str().to_owned(),
            };
            self.metrics
                .source_mode
                .get_or_create(&label)
                .set(i64::from(other == mode));
        }
        tracing::info!(mode = mode.as_str(), "state source");
        *current = Some(mode);
    }

    pub fn set_reload_error(&self, error: Option<String>) {
        *lock(&self.reload_error) = error;
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode_metrics(&self) -> String {
        let since = lock(&self.last_good_poll).map_or(-1.0, |t| t.elapsed().as_secs_f64());
        self.metrics.seconds_since_last_good_poll.set(since);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The `STATUS=` line: `42 processes, 3 unhealthy, last event 2s ago, NATS connected`.
    pub fn summary(&self) -> String {
        let readiness = self.readiness();
        let mode = lock(&self.mode).map_or("", |m| m.as_str());
        let mut parts = vec![format!(
            "{mode}{}{} processes, {} unhealthy",
            if mode.is_empty() { "" } else { ": " },
            self.metrics.processes.get(),
            *lock(&self.unhealthy)
        )];
        parts.push(match *lock(&self.last_event) {
            Some(at) => format!("last event {} ago", short_duration(at.elapsed())),
            None => "no events yet".into(),
        });
        parts.push(match &readiness.nats {
            Ok(()) => "NATS connected".into(),
            Err(e) => format!("NATS {e}"),
        });
        let queued = self.metrics.outbox_messages.get();
        if queued > 0 {
            parts.push(format!("{queued} events queued"));
        }
        if let Err(e) = &readiness.outbox {
            parts.push(format!("outbox: {e}"));
        }
        if let Err(e) = &readiness.process_compose {
            parts.push(format!("process-compose: {e}"));
        }
        if let Some(error) = &*lock(&self.reload_error) {
            parts.push(format!("reload failed, old config kept: {error}"));
        }
        parts.join(", ")
    }
}

fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_the_failing_parts() {
        let status = Status::default();
        assert!(!status.readiness().is_ready());
        status.set_process_compose(Ok(()));
        let first = status.new_nats_connection();
        status.set_nats(first, Ok(()));
        status.set_stream(Ok(()));
        assert!(status.readiness().is_ready());
        status.set_nats(first, Err("disconnected".into()));
        let failing = status.readiness().failing();
        assert_eq!(failing.keys().copied().collect::<Vec<_>>(), ["nats"]);
        assert_eq!(status.metrics.nats_connected.get(), 0);
    }

    #[test]
    fn a_replaced_nats_connection_no_longer_counts() {
        let status = Status::default();
        let old = status.new_nats_connection();
        status.set_nats(old, Ok(()));
        let new = status.new_nats_connection();
        status.set_nats(new, Ok(()));
        status.set_nats(old, Err("connection closed".into()));
        assert!(status.readiness().nats.is_ok());
    }

    #[test]
    fn metrics_are_exported_with_the_prefix() {
        let status = Status::default();
        status.metrics.published(EventType::Crashed.as_str());
        status.metrics.poll_failed("timeout");
        let text = status.encode_metrics();
        assert!(
            text.contains("pc_eventd_events_published_total{type=\"crashed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pc_eventd_poll_errors_total{kind=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pc_eventd_seconds_since_last_good_poll -1"),
            "{text}"
        );
        assert_eq!(status.metrics.published_total(), 1);
        assert_eq!(status.metrics.poll_errors_total(), 1);
    }

    #[test]
    fn the_summary_is_short_and_says_what_fails() {
        let status = Status::default();
        status.set_processes(42, 3);
        let connection = status.new_nats_connection();
        status.set_nats(connection, Ok(()));
        status.set_process_compose(Ok(()));
        assert_eq!(
            status.summary(),
            "42 processes, 3 unhealthy, no events yet, NATS connected"
        );
        status.set_reload_error(Some("nats.urll: unknown key".into()));
        assert!(
            status
                .summary()
                .ends_with("reload failed, old config kept: nats.urll: unknown key")
        );
    }
}
