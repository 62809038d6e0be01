//! `pc-eventd remediate`: restarts processes that crash or go unhealthy, within a policy, and
//! publishes every decision as an event of its own.
//!
//! It reads lifecycle events through a durable consumer ([`pc_eventd_events::consumer`]), so a restart of
//! the remediator neither loses a trigger (its position lives on the server) nor doubles an
//! action: before acting it asks process-compose for the process's current state, and a process
//! that already runs again (restarted by its own policy, or by an earlier delivery of the same
//! event) is left alone. The policy's memory (attempts per window, the circuit breaker) is
//! rebuilt at start from its own outcome events, so limits hold across restarts too.
//!
//! Outcomes go to `{remediate.subject_prefix}.{namespace}.{name}.{action}` in stream
//! `remediate.stream` (see [`RemediationEvent`] and `events/schema/remediation-event.schema.json`);
//! `pc-eventd watch --remediation` shows them.

pub mod policy;

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use pc_eventd_events::process_compose::ComposeClient;
use crate::config::{Config, ConfigError, NatsConfig, RemediateConfig, StreamConfig};
use pc_eventd_events::consumer::{Consumer, ConsumerError, Durable, Filter, Start};
use pc_eventd_events::event::{EventType, LifecycleEvent, Severity, SubjectScheme, timestamp};
use pc_eventd_events::process_compose::model::{ProcessState, Readiness};
use pc_eventd_events::publish::{Message, PublishError, Publisher};
use policy::{Decision, Outcome, Planner, Policies, Policy, Skip};

/// Namespace for the v5 UUIDs of remediation events.
const REMEDIATION_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x2b8c_93f1_5e04_4a7d_b1c6_0f3e_9d52_7a18);

#[derive(Debug, thiserror::Error)]
pub enum RemediateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("cannot read the remediation history from stream {stream}: {message}")]
    History { stream: String, message: String },
}

/// What the remediator did about one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Restart requested through process-compose's API.
    Restarted,
    /// Dry run: it would have restarted the process.
    WouldRestart,
    /// The restart request failed (`error` says why).
    RestartFailed,
    /// The policy said no (`reason`: limit_reached, breaker_open).
    Skipped,
    /// The process already runs again (or is being restarted by its own policy): nothing to do.
    AlreadyRecovered,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restarted => "restarted",
            Self::WouldRestart => "would_restart",
            Self::RestartFailed => "restart_failed",
            Self::Skipped => "skipped",
            Self::AlreadyRecovered => "already_recovered",
        }
    }

    fn severity(self) -> Severity {
        match self {
            Self::Restarted | Self::WouldRestart | Self::AlreadyRecovered => Severity::Info,
            Self::Skipped => Severity::Warning,
            Self::RestartFailed => Severity::Error,
        }
    }
}

/// The lifecycle event that led to an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub seq: u64,
    pub timestamp: String,
}

/// One decision of the remediator, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationEvent {
    /// UUID v5 of (trigger id, action): a redelivered trigger that ends the same way is stored
    /// once (also the `Nats-Msg-Id` header).
    pub id: String,
    pub action: Action,
    pub process: String,
    pub namespace: String,
    /// The process-compose instance (the trigger's `source`).
    pub source: String,
    pub subject: String,
    pub severity: Severity,
    /// RFC 3339, UTC: when the decision was made.
    pub timestamp: String,
    pub trigger: Trigger,
    /// For restarts: the attempt's number within the policy window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// For `skipped`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `skipped` by an open circuit breaker: when it allows an attempt again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// For `restart_failed`: the API's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub dry_run: bool,
}

impl RemediationEvent {
    /// One line for people: `default/web remediation: restarted (attempt 2, after crashed)`.
    pub fn summary(&self) -> String {
        let mut details = Vec::new();
        if let Some(attempt) = self.attempt {
            details.push(format!("attempt {attempt}"));
        }
        if let Some(reason) = &self.reason {
            details.push(reason.clone());
        }
        if let Some(until) = &self.retry_after {
            details.push(format!("until {until}"));
        }
        if let Some(error) = &self.error {
            details.push(error.clone());
        }
        details.push(format!("after {}", self.trigger.event_type));
        format!(
            "{}/{} remediation: {} ({})",
            self.namespace,
            self.process,
            self.action.as_str(),
            details.join(", ")
        )
    }

    fn new(
        scheme: &SubjectScheme,
        trigger: &LifecycleEvent,
        action: Action,
        dry_run: bool,
    ) -> Self {
        let id_input = format!("{}\n{}", trigger.id, action.as_str());
        Self {
            id: uuid::Uuid::new_v5(&REMEDIATION_ID_NAMESPACE, id_input.as_bytes()).to_string(),
            action,
            process: trigger.process.clone(),
            namespace: trigger.namespace.clone(),
            source: trigger.source.clone(),
            subject: scheme.subject_of_kind(&trigger.namespace, &trigger.process, action.as_str()),
            severity: action.severity(),
            timestamp: timestamp(SystemTime::now()),
            trigger: Trigger {
                id: trigger.id.clone(),
                event_type: trigger.event_type,
                seq: trigger.seq,
                timestamp: trigger.timestamp.clone(),
            },
            attempt: None,
            reason: None,
            retry_after: None,
            error: None,
            dry_run,
        }
    }
}

/// The NATS settings of the remediation stream: the daemon's connection, another stream and
/// prefix.
pub fn nats_config(config: &Config) -> NatsConfig {
    let remediate = &config.remediate;
    NatsConfig {
        subject_prefix: remediate.subject_prefix.clone(),
        stream: StreamConfig {
            name: remediate.stream.clone(),
            max_age: remediate.max_age,
            ..config.nats.stream.clone()
        },
        ..config.nats.clone()
    }
}

/// The remediator: policy, memory and the clients it acts through.
pub struct Remediator {
    config: RemediateConfig,
    policies: Policies,
    compose: ComposeClient,
    publisher: Publisher,
    subjects: SubjectScheme,
    planner: tokio::sync::Mutex<Planner>,
}

impl Remediator {
    /// Connects, makes sure the remediation stream exists and rebuilds the policy's memory
    /// from it.
    pub async fn start(config: &Config) -> Result<Self, RemediateError> {
        let remediate = config.remediate.clone();
        let nats = nats_config(config);
        let publisher = Publisher::connect(&nats, |_| {}).await?;
        publisher.ensure_stream(&nats.stream).await?;
        let remediator = Self {
            policies: remediate.policies(),
            config: remediate,
            compose: config.process_compose.client().map_err(ConfigError::from)?,
            publisher,
            subjects: nats.subjects(),
            planner: tokio::sync::Mutex::default(),
        };
        remediator.replay_history(&nats.stream.name).await?;
        Ok(remediator)
    }

    /// Runs until `shutdown`: handles every trigger once, in order.
    pub async fn run(
        &self,
        consumer: &Consumer,
        shutdown: CancellationToken,
    ) -> Result<(), RemediateError> {
        let filter = Filter {
            types: self.config.on.clone(),
            ..Filter::default()
        };
        if !consumer.wait_for_stream(shutdown.cancelled()).await? {
            return Ok(());
        }
        let mut durable = Durable::new(self.config.durable.clone());
        // A retry is a failed publish of an outcome (the restart itself is never retried).
        durable.max_deliver = 10;
        info!(
            durable = %durable.name,
            on = ?self.config.on,
            dry_run = self.config.dry_run,
            "remediating"
        );
        let report = consumer
            .run_durable(
                &durable,
                &filter,
                |event| self.handle(event),
                shutdown.cancelled_owned(),
            )
            .await?;
        info!(?report, "remediation stopped");
        Ok(())
    }

    /// Decides about one trigger, acts, and publishes what it did. An error (the outcome could
    /// not be published) asks for redelivery; the check for a recovered process keeps the
    /// second delivery from restarting it again.
    pub async fn handle(&self, trigger: LifecycleEvent) -> Result<(), PublishError> {
        // Processes outside `allow`, or in `deny`, are none of its business: no action, no event.
        let policy = match self
            .policies
            .for_process(&trigger.namespace, &trigger.process)
        {
            Ok(policy) => policy,
            Err(skip) => {
                debug!(process = %trigger.process, reason = skip.as_str(), "not remediated");
                return Ok(());
            }
        };
        let outcome = self.decide_and_act(&trigger, policy).await;
        info!(summary = %outcome.summary(), "remediation");
        let message = Message::new(
            outcome.subject.clone(),
            outcome.id.clone(),
            outcome.action.as_str(),
            &outcome,
        )
        .expect("remediation events always serialize");
        let batch = self.publisher.publish_batch(&[&message], 1).await;
        match batch.error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    async fn decide_and_act(&self, trigger: &LifecycleEvent, policy: &Policy) -> RemediationEvent {
        let dry_run = self.config.dry_run;
        let event = |action| RemediationEvent::new(&self.subjects, trigger, action, dry_run);
        match self.compose.process(&trigger.process).await {
            Ok(current) if recovered(trigger, &current) => return event(Action::AlreadyRecovered),
            Ok(_) => {}
            // The restart request will say more.
            Err(err) => {
                warn!(process = %trigger.process, error = %err, "cannot read the process's state")
            }
        }
        let key = format!("{}/{}", trigger.namespace, trigger.process);
        let now = SystemTime::now();
        let decision = self.planner.lock().await.decide(&key, policy, now);
        let (attempt, delay) = match decision {
            Decision::Skip(skip) => return skipped(event(Action::Skipped), skip),
            Decision::Restart { attempt, delay } => (attempt, delay),
        };
        tokio::time::sleep(delay).await;
        let result = if dry_run {
            Ok(())
        } else {
            self.compose.restart(&trigger.process).await
        };
        let (mut outcome, recorded) = match result {
            Ok(()) if dry_run => (event(Action::WouldRestart), Outcome::Restarted),
            Ok(()) => (event(Action::Restarted), Outcome::Restarted),
            Err(err) => {
                let mut failed = event(Action::RestartFailed);
                failed.error = Some(err.to_string());
                (failed, Outcome::Failed)
            }
        };
        outcome.attempt = Some(attempt);
        self.planner.lock().await.record(&key, recorded, now);
        outcome
    }

    /// Replays the outcomes of the longest window any policy looks back on, so attempts and
    /// open breakers survive a restart of the remediator.
    async fn replay_history(&self, stream: &str) -> Result<(), RemediateError> {
        let horizon = self.policies.horizon();
        let since = SystemTime::now()
            .checked_sub(horizon)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let history_error = |message: String| RemediateError::History {
            stream: stream.to_owned(),
            message,
        };
        let js = self.publisher.jetstream();
        let consumer = js
            .get_stream(stream)
            .await
            .map_err(|e| history_error(e.to_string()))?
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: Start::Since(since).deliver_policy(),
                ..Default::default()
            })
            .await
            .map_err(|e| history_error(e.to_string()))?;
        let mut left = consumer.cached_info().num_pending;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| history_error(e.to_string()))?;
        let mut planner = self.planner.lock().await;
        let mut replayed = 0;
        while left > 0 {
            let Some(message) = messages.next().await else {
                break;
            };
            left -= 1;
            let message = message.map_err(|e| history_error(e.to_string()))?;
            let Ok(past) = serde_json::from_slice::<RemediationEvent>(&message.payload) else {
                continue;
            };
            let at = humantime::parse_rfc3339(&past.timestamp).unwrap_or(since);
            let Ok(policy) = self.policies.for_process(&past.namespace, &past.process) else {
                continue;
            };
            let key = format!("{}/{}", past.namespace, past.process);
            // The same steps as when it was decided: decide, then record what happened.
            let recorded = match past.action {
                Action::Restarted | Action::WouldRestart => Some(Outcome::Restarted),
                Action::RestartFailed => Some(Outcome::Failed),
                Action::Skipped => None,
                Action::AlreadyRecovered => continue,
            };
            planner.decide(&key, policy, at);
            if let Some(outcome) = recorded {
                planner.record(&key, outcome, at);
            }
            replayed += 1;
        }
        info!(replayed, since = %timestamp(since), "remediation history replayed");
        Ok(())
    }
}

fn skipped(mut event: RemediationEvent, skip: Skip) -> RemediationEvent {
    event.reason = Some(skip.as_str().to_owned());
    if let Skip::BreakerOpen(until) = skip {
        event.retry_after = Some(timestamp(until));
    }
    event
}

/// Whether `current` shows the process no longer in the state `trigger` reported: a new run is
/// up (or on its way, by process-compose's own restart policy), or, for `unhealthy`, it is
/// ready again.
fn recovered(trigger: &LifecycleEvent, current: &ProcessState) -> bool {
    let status = current.status.normalized();
    let new_run = current.pid != trigger.state.pid;
    match trigger.event_type {
        EventType::Unhealthy => {
            current.is_ready == Readiness::Ready || (status.is_active() && new_run)
        }
        // Crashed: anything but an ended run is somebody else's restart.
        _ => !status.is_ended(),
    }
}

/// `pc-eventd remediate`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RemediateError> {
    let consumer = Consumer::connect(&config.nats).await?;
    let remediator = Remediator::start(&config).await?;
    remediator.run(&consumer, shutdown).await
}

/// `pc-eventd watch --remediation`: prints remediation events, optionally of one process.
pub async fn tail(
    config: &Config,
    process: Option<&str>,
    output: crate::commands::watch::Output,
    out: &mut impl std::io::Write,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RemediateError> {
    let nats = nats_config(config);
    let stream_error = |message: String| RemediateError::History {
        stream: nats.stream.name.clone(),
        message,
    };
    let client = nats
        .connect(async_nats::ConnectOptions::new())
        .await
        .map_err(|e| stream_error(e.to_string()))?;
    let js = jetstream::new(client);
    let (namespace, name) = match process.map(pc_eventd_events::event::split_process) {
        Some((namespace, name)) => (namespace, Some(name)),
        None => (None, None),
    };
    let subject = nats.subjects().filter(namespace, name, None);
    tokio::pin!(stop);
    // The remediator creates the stream when it first starts.
    let stream = loop {
        match js.get_stream(&nats.stream.name).await {
            Ok(stream) => break stream,
            Err(err) if pc_eventd_events::consumer::is_not_found(&err) => {}
            Err(err) => return Err(stream_error(err.to_string())),
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| stream_error(e.to_string()))?;
    loop {
        let message = tokio::select! {
            () = &mut stop => return Ok(()),
            message = messages.next() => message,
        };
        let Some(message) = message else {
            return Ok(());
        };
        let Ok(message) = message else {
            continue;
        };
        let line = match output {
            crate::commands::watch::Output::Json => String::from_utf8_lossy(&message.payload).into_owned(),
            crate::commands::watch::Output::Text { styled } => {
                match serde_json::from_slice::<RemediationEvent>(&message.payload) {
                    Ok(event) => crate::commands::watch::styled_line(
                        &event.timestamp,
                        event.severity,
                        &event.summary(),
                        styled,
                    ),
                    Err(_) => continue,
                }
            }
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // A closed pipe ends the watch.
            return Ok(());
        }
    }
}

impl RemediateConfig {
    /// The allow and deny lists and the policies, ready to decide with.
    pub fn policies(&self) -> Policies {
        Policies {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            rules: self.rules.clone(),
            default: self.policy.clone(),
        }
    }
}

impl Policies {
    /// How far back the policies look: the longest window or breaker cooldown.
    fn horizon(&self) -> Duration {
        std::iter::once(&self.default)
            .chain(self.rules.iter().map(|rule| &rule.policy))
            .map(|p| p.window.max(p.breaker_cooldown + p.settle_time))
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pc_eventd_events::process_compose::model::ProcessStatus;

    fn trigger(event_type: EventType, pid: i64) -> LifecycleEvent {
        let mut event = pc_eventd_events::event::example_event();
        event.event_type = event_type;
        event.state.pid = pid;
        event
    }

    fn current(status: ProcessStatus, pid: i64, ready: Readiness) -> ProcessState {
        ProcessState {
            name: "web".into(),
            status,
            pid,
            is_ready: ready,
            ..ProcessState::default()
        }
    }

    #[test]
    fn a_process_that_runs_again_is_left_alone() {
        let crashed = trigger(EventType::Crashed, 41);
        assert!(!recovered(
            &crashed,
            &current(ProcessStatus::Completed, 41, Readiness::Unknown)
        ));
        assert!(!recovered(
            &crashed,
            &current(ProcessStatus::Error, 0, Readiness::Unknown)
        ));
        assert!(recovered(
            &crashed,
            &current(ProcessStatus::Running, 42, Readiness::Unknown)
        ));
        assert!(
            recovered(
                &crashed,
                &current(ProcessStatus::Restarting, 41, Readiness::Unknown)
            ),
            "its own restart policy is on it"
        );

        let unhealthy = trigger(EventType::Unhealthy, 41);
        assert!(!recovered(
            &unhealthy,
            &current(ProcessStatus::Running, 41, Readiness::NotReady)
        ));
        assert!(recovered(
            &unhealthy,
            &current(ProcessStatus::Running, 41, Readiness::Ready)
        ));
        assert!(recovered(
            &unhealthy,
            &current(ProcessStatus::Running, 42, Readiness::NotReady)
        ));
    }

    #[test]
    fn outcome_ids_follow_the_trigger_and_the_action() {
        let scheme = SubjectScheme::new("core.remediation");
        let crashed = trigger(EventType::Crashed, 41);
        let a = RemediationEvent::new(&scheme, &crashed, Action::Restarted, false);
        let b = RemediationEvent::new(&scheme, &crashed, Action::Restarted, false);
        let c = RemediationEvent::new(&scheme, &crashed, Action::AlreadyRecovered, false);
        assert_eq!(a.id, b.id, "a redelivered trigger is stored once");
        assert_ne!(a.id, c.id);
        assert_eq!(
            a.subject,
            format!(
                "core.remediation.{}.{}.restarted",
                crashed.namespace, crashed.process
            )
        );
    }

    #[test]
    fn the_json_schema_describes_exactly_the_payload() {
        let schema: serde_json::Value = serde_json::from_str(include_str!(
            "../../../events/schema/remediation-event.schema.json"
        ))
        .unwrap();
        let keys = |value: &serde_json::Value| {
            let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let scheme = SubjectScheme::new("core.remediation");
        let mut full = RemediationEvent::new(
            &scheme,
            &trigger(EventType::Crashed, 1),
            Action::Skipped,
            true,
        );
        full.attempt = Some(1);
        full.reason = Some("breaker_open".into());
        full.retry_after = Some(timestamp(SystemTime::now()));
        full.error = Some("refused".into());
        let full = serde_json::to_value(&full).unwrap();
        assert_eq!(keys(&full), keys(&schema["properties"]));
        let bare = RemediationEvent::new(
            &scheme,
            &trigger(EventType::Crashed, 1),
            Action::Restarted,
            false,
        );
        let mut required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
        required.sort();
        assert_eq!(keys(&serde_json::to_value(&bare).unwrap()), required);
        assert_eq!(
            keys(&full["trigger"]),
            keys(&schema["properties"]["trigger"]["properties"])
        );
    }
}
