//! The event contract: what pc-eventd publishes and consumers decode.
//!
//! The payload is documented in docs/events.md and `schema/lifecycle-event.schema.json`; a test
//! keeps this code and the schema in step.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Subject prefix used when the configuration names none.
pub const DEFAULT_SUBJECT_PREFIX: &str = "core.process";

/// The kind of lifecycle change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The process entered `Running`, `Launching` or `Launched` from a status that is not
    /// running. A policy restart is not a start: it is [`EventType::Restarted`]. Severity info.
    Started,
    /// The process ended after a stop request ([`Reason::StopRequested`]), or exited with a
    /// success code (0 or one of its `success_exit_codes`) and was not restarted
    /// ([`Reason::ExitedSuccessfully`]); also a running process that disappeared from
    /// process-compose ([`Reason::Removed`]). Severity info.
    Stopped,
    /// The process exited with a failure code without a stop request
    /// ([`Reason::ExitedWithFailure`]), also when its restart policy then restarts it, or its
    /// status became `Error` ([`Reason::ErrorStatus`]). Severity error.
    Crashed,
    /// The process was restarted: by its restart policy, the restart count rose
    /// ([`Reason::RestartPolicy`]); or by hand, a new incarnation started within the restart
    /// pause after the old one stopped ([`Reason::ManualRestart`]). Severity info.
    Restarted,
    /// `is_ready` became `Ready`, also when a new run is already ready. Severity info.
    Healthy,
    /// A run that was `Ready` is `Not Ready` now ([`Reason::ReadinessLost`]), or a run has
    /// never been `Ready` within its readiness grace or was ended by process-compose for failing
    /// its readiness probe ([`Reason::NeverReady`], once per run). A run that is not ready *yet*
    /// is starting, not unhealthy. Severity warning.
    Unhealthy,
    /// Any change of status, published beside the more specific types (process-compose's
    /// REST-only statuses `Scheduled` and `Watching` count as `Completed`). Severity debug.
    StatusChanged,
    /// process-compose will not restart the process again: its run ended with a failure and the
    /// restart policy is spent (`max_restarts`), is `exit_on_failure`, or is `no`. Published
    /// once, right after that run's `crashed`; [`LifecycleEvent::given_up`] names the policy
    /// and the count. Severity critical.
    GivenUp,
    /// The process has been above a memory or CPU threshold for the threshold's duration
    /// ([`LifecycleEvent::pressure`]). Severity warning.
    ResourcePressure,
    /// The process is back under a threshold it was above, and has stayed under it for the
    /// threshold's duration ([`LifecycleEvent::pressure`]). Severity info.
    ResourceRecovered,
    /// The running process has printed nothing for longer than its silence threshold
    /// ([`LifecycleEvent::silence`]). Severity warning.
    Silent,
    /// A process reported [`EventType::Silent`] printed again ([`LifecycleEvent::silence`]).
    /// Severity info.
    OutputResumed,
}

impl EventType {
    /// Every event type, in declaration order: the order of [`Ord`] and of the JSON Schema's
    /// `type` enum.
    pub const ALL: [EventType; 12] = [
        Self::Started,
        Self::Stopped,
        Self::Crashed,
        Self::Restarted,
        Self::Healthy,
        Self::Unhealthy,
        Self::StatusChanged,
        Self::GivenUp,
        Self::ResourcePressure,
        Self::ResourceRecovered,
        Self::Silent,
        Self::OutputResumed,
    ];

    /// The type's name, as in the payload's `type` and the subject's last token:
    /// `status_changed` for [`EventType::StatusChanged`]. [`FromStr`] parses it back.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
            Self::Restarted => "restarted",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::StatusChanged => "status_changed",
            Self::GivenUp => "given_up",
            Self::ResourcePressure => "resource_pressure",
            Self::ResourceRecovered => "resource_recovered",
            Self::Silent => "silent",
            Self::OutputResumed => "output_resumed",
        }
    }

    /// The seed's severity table, extended for the kinds that came after it.
    pub fn severity(self) -> Severity {
        match self {
            Self::Started
            | Self::Stopped
            | Self::Restarted
            | Self::Healthy
            | Self::ResourceRecovered
            | Self::OutputResumed => Severity::Info,
            Self::Crashed => Severity::Error,
            Self::GivenUp => Severity::Critical,
            Self::Unhealthy | Self::ResourcePressure | Self::Silent => Severity::Warning,
            Self::StatusChanged => Severity::Debug,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event type name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown event type `{0}` (expected one of: started, stopped, crashed, restarted, healthy, unhealthy, status_changed, given_up, resource_pressure, resource_recovered, silent, output_resumed)"
)]
pub struct UnknownEventType(String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// How much an event matters, fixed by its type (see [`EventType::severity`]); serialized in
/// lowercase (`debug`, `info`, `warning`, `error`, `critical`).
///
/// Ordered from least to most severe (`Debug < Info < Warning < Error < Critical`), which is what a
/// minimum severity such as [`Filter::min_severity`](crate::consumer::Filter::min_severity)
/// compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Bookkeeping: `status_changed`.
    Debug,
    /// A normal lifecycle step: `started`, `stopped`, `restarted`, `healthy`.
    Info,
    /// Something may be wrong: `unhealthy`.
    Warning,
    /// Something failed: `crashed`, and loss markers ([`EventsLost`]).
    Error,
    /// Something failed for good and needs a person: `given_up`.
    Critical,
}

impl Severity {
    /// The word in plain text output: `DEBUG`, `INFO`, `WARN`, `ERROR`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warning => "WARN",
            Self::Error => "ERROR",
            Self::Critical => "CRIT",
        }
    }
}

/// Why a run ended or a restart happened, where pc-eventd can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `Terminating` was seen before the end: somebody (or process-compose) asked it to stop.
    StopRequested,
    /// It exited with a success code and was not restarted.
    ExitedSuccessfully,
    /// It exited with a failure code without a stop request.
    ExitedWithFailure,
    /// process-compose reported status `Error` (validation or exec failure).
    ErrorStatus,
    /// The restart policy restarted it (`restarts` rose).
    RestartPolicy,
    /// A new incarnation appeared without the restart count rising: a manual restart.
    ManualRestart,
    /// It disappeared from process-compose (removed or renamed by a project update or scaling).
    Removed,
    /// `unhealthy`: it was Ready in this run and its readiness probe fails now.
    ReadinessLost,
    /// `unhealthy`: this run has not been Ready once within the readiness grace, or
    /// process-compose ended it for failing its readiness probe before it ever was.
    NeverReady,
    /// `stopped` or `restarted`: process-compose's file watcher restarted it after a change
    /// to a watched file. Neither a crash nor a reason to remediate.
    FileWatch,
}

/// The process as it was when the event was made: the seed's `state` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventState {
    /// The process's name as process-compose knows it.
    pub name: String,
    /// The namespace the event is published under: the first of
    /// [`namespaces`](EventState::namespaces).
    pub namespace: String,
    /// Every namespace the process is in (process-compose v1.122.0 allows several).
    pub namespaces: Vec<String>,
    /// process-compose's status, e.g. `Running`, `Restarting`, `Completed`, `Error`.
    pub status: String,
    /// Readiness as process-compose reports it: `Ready`, `Not Ready`, or `-` (no probe result,
    /// or reset by a restart or stop).
    pub is_ready: String,
    /// Whether the process has a readiness probe.
    pub has_ready_probe: bool,
    /// process-compose's restart count: how often the restart policy restarted the process (a
    /// manual restart leaves it as it was).
    pub restarts: u32,
    /// The last exit code process-compose reported (`-1`: killed by a signal); meaningful once
    /// a run has ended.
    pub exit_code: i32,
    /// Derived from `status`: process-compose refreshes its own flag only when polled.
    pub is_running: bool,
    /// The operating system's process id as process-compose reports it; not positive when there
    /// is none.
    pub pid: i64,
}

/// One lifecycle event, as published on `{prefix}.{namespace}.{name}.{type}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Stable id, also the `Nats-Msg-Id` header: derived from the process's incarnation and the
    /// transition, never from the clock, so a re-published event is dropped by JetStream.
    pub id: String,
    /// What changed; `type` in the JSON.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The process's real name (the subject carries it made subject-safe, see
    /// [`subject_token`]).
    pub process: String,
    /// The process's namespace: the first one when it is in several (see
    /// [`EventState::namespaces`]).
    pub namespace: String,
    /// RFC 3339, UTC, milliseconds: when pc-eventd observed the change.
    pub timestamp: String,
    /// The subject the event was published on, `{prefix}.{namespace}.{name}.{type}`, or
    /// `{prefix}.{source}.{namespace}.{name}.{type}` in the by-source layout (see
    /// [`SubjectScheme::subject`]).
    pub subject: String,
    /// Fixed by the type ([`EventType::severity`]); carried so that consumers need not know the
    /// table.
    pub severity: Severity,
    /// Per-process sequence number, strictly increasing; a restarted daemon goes on from the
    /// number kept with the process's record.
    pub seq: u64,
    /// Which process-compose instance this came from.
    pub source: String,
    /// The status before the change; absent when the process was not known before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
    /// For `stopped` and `crashed`: the exit code of the run that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// For `restarted`: the restart count after the restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    /// For `restarted`: how many policy restarts happened since the previous observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts_delta: Option<u32>,
    /// For `stopped`, `crashed`, `restarted` and `unhealthy`: why, where pc-eventd can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Inferred by comparing snapshots (a poll, or the state sent on a stream reconnect) rather
    /// than seen as it happened: steps between the two snapshots may be merged or missing.
    #[serde(default)]
    pub synthetic: bool,
    /// For `crashed`: the last lines the process printed, read from process-compose when the
    /// crash was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ProcessOutput>,
    /// For `given_up`: which policy stopped the restarts, and the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_up: Option<GivenUp>,
    /// For `resource_pressure` and `resource_recovered`: the threshold and the reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    /// For `silent` and `output_resumed`: the threshold and the last output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Silence>,
    /// The process as observed with this change.
    pub state: EventState,
}

/// The end of a process's output, as a `crashed` event carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessOutput {
    /// The last lines, oldest first, after redaction; fewer than asked for when the byte cap
    /// cut them.
    #[serde(default)]
    pub lines: Vec<String>,
    /// Lines were left out: older ones beyond the byte cap, or a line cut at the cap.
    #[serde(default)]
    pub truncated: bool,
    /// How many matches of the redaction patterns were replaced.
    #[serde(default)]
    pub redacted: u32,
    /// Why there are no lines: the read timed out or failed. The event is published without
    /// them rather than held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl ProcessOutput {
    /// The newest lines that fit in `max_bytes` (a newest line longer than that alone is cut at
    /// a character boundary); `truncated` when any were left out or cut.
    pub fn keep_newest(mut self, max_bytes: usize) -> Self {
        let mut kept = Vec::new();
        let mut used = 0usize;
        for line in std::mem::take(&mut self.lines).into_iter().rev() {
            if used + line.len() <= max_bytes {
                used += line.len();
                kept.push(line);
                continue;
            }
            self.truncated = true;
            if kept.is_empty() {
                let mut end = max_bytes;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                kept.push(line[..end].to_owned());
            }
            break;
        }
        kept.reverse();
        self.lines = kept;
        self
    }
}

/// Which restart policy gave up on a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GivenUpPolicy {
    /// `max_restarts` restarts were made (`restart: always` or `on_failure`).
    MaxRestarts,
    /// `restart: exit_on_failure`: process-compose shuts the project down.
    ExitOnFailure,
    /// `restart: no` (the default): a failed run is never restarted.
    No,
}

impl GivenUpPolicy {
    /// The policy's name as in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxRestarts => "max_restarts",
            Self::ExitOnFailure => "exit_on_failure",
            Self::No => "no",
        }
    }
}

/// What a `given_up` event says about the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GivenUp {
    /// The policy that stops the restarts.
    pub policy: GivenUpPolicy,
    /// Policy restarts made in this incarnation.
    pub restarts: u32,
    /// The policy's limit, for [`GivenUpPolicy::MaxRestarts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
}

/// A measured resource of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Resident memory, in bytes.
    Memory,
    /// CPU use, in percent of one core.
    Cpu,
}

impl Resource {
    /// The resource's name as in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
        }
    }

    /// `value` in the resource's unit, for people: `512 MiB`, `93.5%`.
    pub fn format(self, value: f64) -> String {
        match self {
            Self::Memory => format!("{:.0} MiB", value / (1024.0 * 1024.0)),
            Self::Cpu => format!("{value:.1}%"),
        }
    }
}

/// What a `resource_pressure` or `resource_recovered` event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// Which resource.
    pub resource: Resource,
    /// The reading that completed the duration: bytes or percent.
    pub value: f64,
    /// The threshold, in the same unit.
    pub threshold: f64,
    /// How long the process must stay above (or, to recover, under) the threshold.
    pub for_seconds: u64,
}

/// What a `silent` or `output_resumed` event says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// How long a process may print nothing before it is silent.
    pub threshold_seconds: u64,
    /// When it last printed (RFC 3339, as process-compose reports it), if it ever did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_output: Option<String>,
    /// For `output_resumed`: how long it was silent, as far as pc-eventd observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_seconds: Option<u64>,
}

impl LifecycleEvent {
    /// One line for people: `default/nats crashed (exit=3)`.
    pub fn summary(&self) -> String {
        let mut line = format!("{}/{} {}", self.namespace, self.process, self.event_type);
        if let Some(detail) = self.detail() {
            line.push_str(&format!(" ({detail})"));
        }
        line
    }

    /// What a person needs beside the type: the exit code, the restart count, or why.
    pub fn detail(&self) -> Option<String> {
        match self.event_type {
            EventType::Restarted | EventType::Stopped if self.reason == Some(Reason::FileWatch) => {
                Some("file watch".to_owned())
            }
            EventType::Stopped | EventType::Crashed => self.exit_code.map(|c| format!("exit={c}")),
            // A manual restart leaves process-compose's count as it was, so the count would
            // read as no restart at all.
            EventType::Restarted if self.reason == Some(Reason::ManualRestart) => {
                Some("manual".to_owned())
            }
            EventType::Restarted => self.restarts.map(|c| match self.restarts_delta {
                Some(d) if d > 1 => format!("count={c}, +{d}"),
                _ => format!("count={c}"),
            }),
            EventType::Unhealthy if self.reason == Some(Reason::NeverReady) => {
                Some("never ready".to_owned())
            }
            EventType::GivenUp
            | EventType::ResourcePressure
            | EventType::ResourceRecovered
            | EventType::Silent
            | EventType::OutputResumed => self.condition_detail(),
            EventType::StatusChanged => Some(format!(
                "{} → {}",
                self.previous_status.as_deref().unwrap_or("new"),
                self.state.status
            )),
            _ => None,
        }
    }

    /// The detail of the kinds that came after the seed's: the policy that gave up, the
    /// reading against the threshold, the silence.
    fn condition_detail(&self) -> Option<String> {
        match self.event_type {
            EventType::GivenUp => self.given_up.as_ref().map(|g| {
                let of = g
                    .max_restarts
                    .map(|max| format!("/{max}"))
                    .unwrap_or_default();
                format!("policy={}, restarts={}{of}", g.policy.as_str(), g.restarts)
            }),
            EventType::ResourcePressure | EventType::ResourceRecovered => {
                self.pressure.as_ref().map(|p| {
                    let side = if self.event_type == EventType::ResourcePressure {
                        '>'
                    } else {
                        '<'
                    };
                    format!(
                        "{} {} {side} {} for {}s",
                        p.resource.as_str(),
                        p.resource.format(p.value),
                        p.resource.format(p.threshold),
                        p.for_seconds
                    )
                })
            }
            EventType::Silent => self
                .silence
                .as_ref()
                .map(|s| format!("no output for {}s", s.threshold_seconds)),
            EventType::OutputResumed => self
                .silence
                .as_ref()
                .and_then(|s| s.silent_seconds)
                .map(|secs| format!("after {secs}s of silence")),
            _ => None,
        }
    }
}

/// Where the source goes in a subject: the `nats.subject_layout` setting.
///
/// Both layouts fit under the stream's `{prefix}.>`, and they never share a subject: a plain
/// subject has four tokens under the prefix, a by-source subject five.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectLayout {
    /// `{prefix}.{namespace}.{name}.{type}`, the seed's scheme: one host per stream. A consumer
    /// that selects a source reads the other subjects it asked for and drops other sources'
    /// events itself.
    #[default]
    Plain,
    /// `{prefix}.{source}.{namespace}.{name}.{type}`: many hosts into one stream, and a consumer
    /// selects one host on the server (`core.process.web-01.>`). Needs an explicit
    /// `process_compose.source` on each host.
    BySource,
}

/// Builds subjects under a prefix, in a [`SubjectLayout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectScheme {
    prefix: String,
    layout: SubjectLayout,
}

impl SubjectScheme {
    /// A plain scheme under `prefix` (`nats.subject_prefix`, [`DEFAULT_SUBJECT_PREFIX`] by
    /// default). The prefix is used as given; the daemon's configuration checks that it is a
    /// literal subject.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            layout: SubjectLayout::Plain,
        }
    }

    /// The same prefix in `layout`.
    pub fn with_layout(self, layout: SubjectLayout) -> Self {
        Self { layout, ..self }
    }

    /// Whether a filter on the source is applied by the server (the source is a token).
    pub fn selects_source(&self) -> bool {
        self.layout == SubjectLayout::BySource
    }

    /// `{prefix}[.{source}].{namespace}.{name}.{type}` with every name made subject-safe.
    pub fn subject(
        &self,
        source: &str,
        namespace: &str,
        name: &str,
        event_type: EventType,
    ) -> String {
        self.subject_of_kind(source, namespace, name, event_type.as_str())
    }

    /// Like [`SubjectScheme::subject`] for other kinds of message about a process (the
    /// remediator's actions).
    pub fn subject_of_kind(&self, source: &str, namespace: &str, name: &str, kind: &str) -> String {
        format!(
            "{}.{}.{}.{kind}",
            self.under_source(&subject_token(source)),
            subject_token(namespace),
            subject_token(name),
        )
    }

    /// The prefix, followed by `source` (a token or `*`) in the by-source layout.
    fn under_source(&self, source: &str) -> String {
        match self.layout {
            SubjectLayout::Plain => self.prefix.clone(),
            SubjectLayout::BySource => format!("{}.{source}", self.prefix),
        }
    }

    /// Every subject this scheme publishes to, for the stream's subject list.
    pub fn wildcard(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// Where the loss markers of `source` go (see [`EventsLost`]): the shape of an event's
    /// subject, under a namespace no process-compose project can have a process in (`_` then a
    /// `-`), with the source as the name.
    pub fn events_lost(&self, source: &str) -> String {
        self.subject_of_kind(source, LOSS_NAMESPACE, source, EVENTS_LOST)
    }

    /// A subscription subject; `None` parts match any token. The source is only part of the
    /// subject in the by-source layout (see [`SubjectScheme::selects_source`]).
    pub fn filter(
        &self,
        source: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
        event_type: Option<EventType>,
    ) -> String {
        let any = || "*".to_owned();
        let source = source.map_or_else(any, subject_token);
        let namespace = namespace.map_or_else(any, subject_token);
        let name = name.map_or_else(any, subject_token);
        let event_type = event_type.map_or("*", EventType::as_str);
        format!(
            "{}.{namespace}.{name}.{event_type}",
            self.under_source(&source)
        )
    }
}

impl Default for SubjectScheme {
    fn default() -> Self {
        Self::new(DEFAULT_SUBJECT_PREFIX)
    }
}

/// Makes a name one safe subject token.
///
/// A `.` would add a level and `*` / `>` would act as wildcards, so those, `%`, whitespace and
/// control characters are percent-encoded (`web.v2` → `web%2Ev2`). The encoding is one-to-one,
/// so two different names never share a subject; the real name stays in the payload. An empty
/// name becomes `%00`, which no real name encodes to.
pub fn subject_token(name: &str) -> String {
    if name.is_empty() {
        return "%00".to_owned();
    }
    let mut token = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '.' | '*' | '>' | '%') || c.is_whitespace() || c.is_control() {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                token.push_str(&format!("%{byte:02X}"));
            }
        } else {
            token.push(c);
        }
    }
    token
}

/// The namespace token of loss markers.
pub const LOSS_NAMESPACE: &str = "_pc-eventd";
/// The type of loss markers.
pub const EVENTS_LOST: &str = "events_lost";

/// A gap in the record, published once pc-eventd can again: its outbox was full (NATS down too
/// long for `outbox.max_bytes`), so it had to drop `lost` events between `first_lost_at` and
/// `last_lost_at`. Consumers that keep state from the events should re-read the processes it
/// names (`source`). Never published otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsLost {
    /// Stable id (a v5 UUID of the source and the time of the first loss), also the
    /// `Nats-Msg-Id` header: one per episode however often the marker is re-sent, so JetStream
    /// drops the copies within its duplicate window.
    pub id: String,
    /// Always `events_lost`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The process-compose instance whose events were lost, as in [`LifecycleEvent::source`].
    pub source: String,
    /// The subject the marker was published on (see [`SubjectScheme::events_lost`]).
    pub subject: String,
    /// Always [`Severity::Error`].
    pub severity: Severity,
    /// RFC 3339: when the marker was queued.
    pub timestamp: String,
    /// How many events were dropped.
    pub lost: u64,
    /// RFC 3339: when the first of them was dropped.
    pub first_lost_at: String,
    /// RFC 3339: when the last of them was dropped.
    pub last_lost_at: String,
    /// Why: `outbox_full`.
    pub reason: String,
}

impl std::fmt::Display for EventsLost {
    /// `412 events of web-01 were lost between … and … (outbox_full)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events of {} were lost between {} and {} ({})",
            self.lost, self.source, self.first_lost_at, self.last_lost_at, self.reason
        )
    }
}

impl EventsLost {
    /// The marker for `lost` events of `source` dropped between `first_lost_at` and
    /// `last_lost_at`, stamped now, with its subject from `scheme`. The id depends only on
    /// `source` and `first_lost_at`, so a marker made again for the same episode (with a newer
    /// count) keeps its id.
    pub fn new(
        scheme: &SubjectScheme,
        source: &str,
        lost: u64,
        first_lost_at: std::time::SystemTime,
        last_lost_at: std::time::SystemTime,
    ) -> Self {
        let first_lost_at = timestamp(first_lost_at);
        // One marker per episode, the same however often it is re-sent.
        let id_input = format!("{source}\n{EVENTS_LOST}\n{first_lost_at}");
        Self {
            id: uuid::Uuid::new_v5(&LOSS_ID_NAMESPACE, id_input.as_bytes()).to_string(),
            kind: EVENTS_LOST.to_owned(),
            source: source.to_owned(),
            subject: scheme.events_lost(source),
            severity: Severity::Error,
            timestamp: timestamp(std::time::SystemTime::now()),
            lost,
            first_lost_at,
            last_lost_at: timestamp(last_lost_at),
            reason: "outbox_full".to_owned(),
        }
    }
}

/// Namespace for the v5 UUIDs of loss markers.
const LOSS_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8f0e_41d2_6b7a_4c19_9e35_d0c4_7a21_b6e8);

/// Formats a time as the payload's timestamp: RFC 3339, UTC, milliseconds.
pub fn timestamp(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A full event (`default/web restarted (count=3)`), for consumers' tests and examples.
pub fn example_event() -> LifecycleEvent {
    LifecycleEvent {
        id: "6f1c2a52-61a8-5f57-9a3d-3d1c0e1d2b4f".into(),
        event_type: EventType::Restarted,
        process: "web".into(),
        namespace: "default".into(),
        timestamp: "2025-10-16T09:53:31.123Z".into(),
        subject: "core.process.default.web.restarted".into(),
        severity: Severity::Info,
        seq: 7,
        source: "http://127.0.0.1:8080".into(),
        previous_status: Some("Restarting".into()),
        exit_code: Some(2),
        restarts: Some(3),
        restarts_delta: Some(1),
        reason: Some(Reason::RestartPolicy),
        synthetic: true,
        output: None,
        given_up: None,
        pressure: None,
        silence: None,
        state: EventState {
            name: "web".into(),
            namespace: "default".into(),
            namespaces: vec!["default".into()],
            status: "Running".into(),
            is_ready: "-".into(),
            has_ready_probe: false,
            restarts: 3,
            exit_code: 2,
            is_running: true,
            pid: 4242,
        },
    }
}

/// Splits a process as filters and commands name it, `NAME` or `NAMESPACE/NAME`: a non-empty
/// part before the first `/` is the namespace; otherwise (`web`, `/web`) the whole text is the
/// name.
pub fn split_process(process: &str) -> (Option<&str>, &str) {
    match process.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() => (Some(namespace), name),
        _ => (None, process),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_a_name_or_a_namespace_and_a_name() {
        assert_eq!(split_process("web"), (None, "web"));
        assert_eq!(split_process("jobs/web"), (Some("jobs"), "web"));
        assert_eq!(split_process("jobs/api/v2"), (Some("jobs"), "api/v2"));
        assert_eq!(split_process("/web"), (None, "/web"));
    }

    #[test]
    fn tokens_never_add_levels_or_wildcards() {
        assert_eq!(subject_token("nats"), "nats");
        assert_eq!(subject_token("web.v2"), "web%2Ev2");
        assert_eq!(subject_token("a b*>"), "a%20b%2A%3E");
        assert_eq!(subject_token("50%"), "50%25");
        assert_eq!(subject_token("tab\there"), "tab%09here");
        assert_eq!(subject_token(""), "%00");
        // one-to-one: an encoded name cannot collide with a literal one
        assert_ne!(subject_token("a.b"), subject_token("a%2Eb"));
    }

    #[test]
    fn subjects_have_exactly_five_tokens() {
        let scheme = SubjectScheme::default();
        let subject = scheme.subject("web-01", "my ns", "api.v1 *", EventType::Crashed);
        assert_eq!(subject, "core.process.my%20ns.api%2Ev1%20%2A.crashed");
        assert_eq!(subject.split('.').count(), 5);
    }

    #[test]
    fn by_source_subjects_put_the_source_after_the_prefix() {
        let scheme = SubjectScheme::default().with_layout(SubjectLayout::BySource);
        let subject = scheme.subject("web-01.eu", "my ns", "api", EventType::Crashed);
        assert_eq!(subject, "core.process.web-01%2Eeu.my%20ns.api.crashed");
        assert_eq!(
            scheme.events_lost("web-01"),
            "core.process.web-01._pc-eventd.web-01.events_lost"
        );
        assert_eq!(
            scheme.filter(Some("web-01"), None, Some("api"), None),
            "core.process.web-01.*.api.*"
        );
        assert_eq!(
            scheme.filter(None, None, None, None),
            "core.process.*.*.*.*"
        );
        assert!(scheme.selects_source());
        assert!(!SubjectScheme::default().selects_source());
    }

    #[test]
    fn filters_keep_the_same_shape_as_subjects() {
        let scheme = SubjectScheme::default();
        assert_eq!(
            scheme.filter(None, None, Some("nats"), None),
            "core.process.*.nats.*"
        );
        assert_eq!(
            scheme.filter(Some("web-01"), None, None, Some(EventType::Crashed)),
            "core.process.*.*.crashed",
            "a plain subject has no source to select"
        );
        assert_eq!(
            scheme.filter(
                None,
                Some("default"),
                Some("a.b"),
                Some(EventType::StatusChanged)
            ),
            "core.process.default.a%2Eb.status_changed"
        );
    }

    #[test]
    fn event_types_round_trip_through_their_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!("crash".parse::<EventType>().is_err());
    }

    fn keys(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_loss_marker_schema_describes_exactly_its_payload() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../schema/events-lost.schema.json")).unwrap();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let marker = EventsLost::new(&SubjectScheme::default(), "web-01/shop", 412, at, at);
        assert_eq!(
            marker.subject,
            "core.process._pc-eventd.web-01/shop.events_lost"
        );
        let again = EventsLost::new(&SubjectScheme::default(), "web-01/shop", 413, at, at);
        assert_eq!(marker.id, again.id, "one id per episode");
        let value = serde_json::to_value(&marker).unwrap();
        assert_eq!(keys(&value), keys(&schema["properties"]));
        let mut required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
        required.sort();
        assert_eq!(keys(&value), required);
        assert_eq!(value["type"], schema["properties"]["type"]["const"]);
        assert_eq!(value["reason"], schema["properties"]["reason"]["enum"][0]);
    }

    /// [`example_event`] with every optional field set, those of other types too.
    fn every_field_event() -> LifecycleEvent {
        let mut event = example_event();
        event.output = Some(ProcessOutput {
            lines: vec!["boom".into()],
            truncated: true,
            redacted: 1,
            unavailable: Some("timed out".into()),
        });
        event.given_up = Some(GivenUp {
            policy: GivenUpPolicy::MaxRestarts,
            restarts: 2,
            max_restarts: Some(2),
        });
        event.pressure = Some(Pressure {
            resource: Resource::Memory,
            value: 600.0,
            threshold: 512.0,
            for_seconds: 30,
        });
        event.silence = Some(Silence {
            threshold_seconds: 60,
            last_output: Some("2025-10-16T09:53:31Z".into()),
            silent_seconds: Some(75),
        });
        event
    }

    #[test]
    fn output_keeps_the_newest_lines_that_fit() {
        let output = |lines: &[&str]| ProcessOutput {
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            ..ProcessOutput::default()
        };
        let kept = output(&["oldest", "abcd", "efghij"]).keep_newest(10);
        assert_eq!(kept.lines, ["abcd", "efghij"]);
        assert!(kept.truncated);
        let exact = output(&["abcd", "efghij"]).keep_newest(10);
        assert_eq!(exact.lines, ["abcd", "efghij"]);
        assert!(!exact.truncated, "exactly the cap is not truncated");
        let cut = output(&["older", "ab€def"]).keep_newest(5);
        assert_eq!(cut.lines, ["ab€"]);
        assert!(cut.truncated);
        let mut already = output(&["a"]);
        already.truncated = true;
        assert!(already.keep_newest(10).truncated, "stays truncated");
        assert!(output(&["abc"]).keep_newest(0).lines == [""]);
    }

    #[test]
    fn the_json_schema_describes_exactly_the_payload() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../schema/lifecycle-event.schema.json")).unwrap();
        let full = serde_json::to_value(every_field_event()).unwrap();
        assert_eq!(keys(&full), keys(&schema["properties"]));
        for object in ["state", "output", "given_up", "pressure", "silence"] {
            assert_eq!(
                keys(&full[object]),
                keys(&schema["properties"][object]["properties"]),
                "{object}"
            );
        }

        let mut bare = example_event();
        (bare.previous_status, bare.exit_code, bare.restarts) = (None, None, None);
        (bare.restarts_delta, bare.reason) = (None, None);
        let bare = serde_json::to_value(bare).unwrap();
        let mut required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
        required.sort();
        assert_eq!(
            keys(&bare),
            required,
            "what is always present is what is required"
        );
        let mut state_required: Vec<String> =
            serde_json::from_value(schema["properties"]["state"]["required"].clone()).unwrap();
        state_required.sort();
        assert_eq!(keys(&bare["state"]), state_required);

        let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            schema["properties"]["type"]["enum"],
            serde_json::json!(types)
        );
        for severity in [
            Severity::Debug,
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Critical,
        ] {
            let name = serde_json::to_value(severity).unwrap();
            assert!(
                schema["properties"]["severity"]["enum"]
                    .as_array()
                    .unwrap()
                    .contains(&name)
            );
        }
        for reason in [
            Reason::StopRequested,
            Reason::ExitedSuccessfully,
            Reason::ExitedWithFailure,
            Reason::ErrorStatus,
            Reason::RestartPolicy,
            Reason::ManualRestart,
            Reason::Removed,
            Reason::ReadinessLost,
            Reason::NeverReady,
            Reason::FileWatch,
        ] {
            let name = serde_json::to_value(reason).unwrap();
            assert!(
                schema["properties"]["reason"]["enum"]
                    .as_array()
                    .unwrap()
                    .contains(&name)
            );
        }
    }

    #[test]
    fn the_stream_takes_every_subject_under_the_prefix() {
        assert_eq!(SubjectScheme::default().wildcard(), "core.process.>");
        assert_eq!(SubjectScheme::new("acme.pc").wildcard(), "acme.pc.>");
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = every_field_event();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            serde_json::from_str::<LifecycleEvent>(&json).unwrap(),
            event
        );
    }

    #[test]
    fn summaries_carry_the_seed_detail() {
        let mut event = example_event();
        assert_eq!(event.summary(), "default/web restarted (count=3)");
        event.restarts_delta = Some(3);
        assert_eq!(event.summary(), "default/web restarted (count=3, +3)");
        event.reason = Some(Reason::ManualRestart);
        assert_eq!(event.summary(), "default/web restarted (manual)");
        event.reason = None;
        event.event_type = EventType::Stopped;
        event.exit_code = Some(0);
        assert_eq!(event.summary(), "default/web stopped (exit=0)");
        event.event_type = EventType::Unhealthy;
        event.reason = Some(Reason::NeverReady);
        assert_eq!(event.summary(), "default/web unhealthy (never ready)");
        event.reason = Some(Reason::ReadinessLost);
        assert_eq!(event.summary(), "default/web unhealthy");
        event.event_type = EventType::StatusChanged;
        assert_eq!(
            event.summary(),
            "default/web status_changed (Restarting → Running)"
        );
    }

    #[test]
    fn summaries_of_the_later_kinds_carry_their_detail() {
        let mut event = every_field_event();
        event.reason = Some(Reason::FileWatch);
        assert_eq!(event.summary(), "default/web restarted (file watch)");
        event.event_type = EventType::Stopped;
        assert_eq!(event.summary(), "default/web stopped (file watch)");
        event.event_type = EventType::GivenUp;
        assert_eq!(
            event.summary(),
            "default/web given_up (policy=max_restarts, restarts=2/2)"
        );
        event.given_up = Some(GivenUp {
            policy: GivenUpPolicy::No,
            restarts: 0,
            max_restarts: None,
        });
        assert_eq!(
            event.summary(),
            "default/web given_up (policy=no, restarts=0)"
        );
        event.event_type = EventType::ResourcePressure;
        event.pressure = Some(Pressure {
            resource: Resource::Memory,
            value: 600.0 * 1024.0 * 1024.0,
            threshold: 512.0 * 1024.0 * 1024.0,
            for_seconds: 30,
        });
        assert_eq!(
            event.summary(),
            "default/web resource_pressure (memory 600 MiB > 512 MiB for 30s)"
        );
        event.event_type = EventType::ResourceRecovered;
        event.pressure = Some(Pressure {
            resource: Resource::Cpu,
            value: 12.25,
            threshold: 90.0,
            for_seconds: 10,
        });
        assert_eq!(
            event.summary(),
            "default/web resource_recovered (cpu 12.2% < 90.0% for 10s)"
        );
        event.event_type = EventType::Silent;
        assert_eq!(event.summary(), "default/web silent (no output for 60s)");
        event.event_type = EventType::OutputResumed;
        assert_eq!(
            event.summary(),
            "default/web output_resumed (after 75s of silence)"
        );
        assert_eq!(EventType::GivenUp.severity(), Severity::Critical);
        assert!(Severity::Critical > Severity::Error);
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_760_608_411_123);
        assert_eq!(timestamp(at), "2025-10-16T09:53:31.123Z");
    }
}
