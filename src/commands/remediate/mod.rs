//! `pc-eventd remediate`: restarts processes that crash, go unhealthy or (when asked) stay over
//! a memory threshold, within a policy, and publishes every decision as an event of its own.
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

mod config;
pub(crate) mod policy;

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use pc_eventd_events::consumer::{Consumer, ConsumerError, Durable, Filter, Start};
use pc_eventd_events::event::{LifecycleEvent, SubjectScheme, timestamp};
use pc_eventd_events::nats::NatsConfig;
use pc_eventd_events::process_compose::ComposeClient;
use pc_eventd_events::publish::{Message, PublishError, Publisher};
use pc_eventd_events::remediation::{Action, RemediationEvent};
use policy::{AttemptResult, Decision, Planner, Policies, Policy, Skip, Triggers, recovered};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::RemediateConfig;

/// Why the remediator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RemediateError {
    /// Reading lifecycle events failed.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// Setting up the remediation stream or publishing an outcome failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Its own history could not be read back at start.
    #[error("cannot read the remediation history: {0}")]
    History(#[source] ConsumerError),
}

/// The remediator: policy, memory and the clients it acts through.
pub(crate) struct Remediator {
    config: RemediateConfig,
    triggers: Triggers,
    policies: Policies,
    compose: ComposeClient,
    /// The `source` of the events of `compose`'s processes: the only ones it can restart.
    source: String,
    publisher: Publisher,
    subjects: SubjectScheme,
    planner: tokio::sync::Mutex<Planner>,
}

impl Remediator {
    /// Connects, makes sure the remediation stream exists and rebuilds the policy's memory
    /// from it.
    /// `nats` is the daemon's connection; the remediation stream's settings come from
    /// `remediate`. It acts on the events of `source` only, which `compose` serves.
    pub(crate) async fn start(
        remediate: RemediateConfig,
        nats: &NatsConfig,
        compose: ComposeClient,
        source: String,
    ) -> Result<Self, RemediateError> {
        let nats = remediate.nats(nats);
        let publisher = Publisher::connect(&nats, |_| {}).await?;
        publisher.ensure_stream(&nats.stream).await?;
        let remediator = Self {
            triggers: remediate.triggers(),
            policies: remediate.policies(),
            config: remediate,
            compose,
            source,
            publisher,
            subjects: nats.subjects(),
            planner: tokio::sync::Mutex::default(),
        };
        remediator.replay_history(&nats).await?;
        Ok(remediator)
    }

    /// Runs until `shutdown`: handles every trigger once, in order.
    pub(crate) async fn run(
        &self,
        consumer: &Consumer,
        shutdown: CancellationToken,
    ) -> Result<(), RemediateError> {
        // Many hosts may publish into one stream: another host's process of the same name is
        // not this process-compose's to restart.
        let filter = Filter {
            source: Some(self.source.clone()),
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
            source = %self.source,
            on = ?self.config.on,
            pressure_resources = ?self.config.pressure_resources,
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
    pub(crate) async fn handle(&self, trigger: LifecycleEvent) -> Result<(), PublishError> {
        // Events that are no trigger (a file watcher's restart, pressure of another resource, a
        // `given_up` whose crash was the trigger) get no decision and no event.
        if let Err(not) = self.triggers.admit(&trigger) {
            debug!(
                process = %trigger.process,
                r#type = %trigger.event_type,
                reason = not.as_str(),
                "not a trigger"
            );
            return Ok(());
        }
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
        let message = Message::of(&outcome);
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
            Ok(()) if dry_run => (event(Action::WouldRestart), AttemptResult::Restarted),
            Ok(()) => (event(Action::Restarted), AttemptResult::Restarted),
            Err(err) => {
                let mut failed = event(Action::RestartFailed);
                failed.error = Some(err.to_string());
                (failed, AttemptResult::Failed)
            }
        };
        outcome.attempt = Some(attempt);
        self.planner.lock().await.record(&key, recorded, now);
        outcome
    }

    /// Replays the outcomes of the longest window any policy looks back on, so attempts and
    /// open breakers survive a restart of the remediator.
    async fn replay_history(&self, nats: &NatsConfig) -> Result<(), RemediateError> {
        let horizon = self.policies.horizon();
        let since = SystemTime::now()
            .checked_sub(horizon)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let history = Consumer::connect(nats)
            .await
            .map_err(RemediateError::History)?
            .messages(
                self.subjects.filter(Some(&self.source), None, None, None),
                Start::Since(since),
            )
            .await
            .map_err(RemediateError::History)?;
        let (mut left, mut messages) = (history.backlog, history.stream);
        let mut planner = self.planner.lock().await;
        let mut replayed = 0;
        while left > 0 {
            let Some(message) = messages.next().await else {
                break;
            };
            left -= 1;
            let message =
                message.map_err(|e| RemediateError::History(ConsumerError::Messages(e.into())))?;
            // A plain subject does not say its source: other hosts' outcomes are not this one's.
            let Ok(past) = serde_json::from_slice::<RemediationEvent>(&message.payload) else {
                continue;
            };
            if past.source != self.source {
                continue;
            }
            if self.replay(&mut planner, &past, since) {
                replayed += 1;
            }
        }
        info!(replayed, since = %timestamp(since), "remediation history replayed");
        Ok(())
    }

    /// Takes the steps `past` took when it was decided (decide, then record what happened);
    /// false for an outcome that changed nothing.
    fn replay(&self, planner: &mut Planner, past: &RemediationEvent, since: SystemTime) -> bool {
        let at = humantime::parse_rfc3339(&past.timestamp).unwrap_or(since);
        let Ok(policy) = self.policies.for_process(&past.namespace, &past.process) else {
            return false;
        };
        let key = format!("{}/{}", past.namespace, past.process);
        let recorded = match past.action {
            Action::Restarted | Action::WouldRestart => Some(AttemptResult::Restarted),
            Action::RestartFailed => Some(AttemptResult::Failed),
            Action::Skipped => None,
            Action::AlreadyRecovered => return false,
        };
        planner.decide(&key, policy, at);
        if let Some(outcome) = recorded {
            planner.record(&key, outcome, at);
        }
        true
    }
}

fn skipped(mut event: RemediationEvent, skip: Skip) -> RemediationEvent {
    event.reason = Some(skip.as_str().to_owned());
    if let Skip::BreakerOpen(until) = skip {
        event.retry_after = Some(timestamp(until));
    }
    event
}

/// `pc-eventd remediate`: `nats` is the daemon's connection (the triggers' stream); it restarts
/// the processes of `compose`, whose events come from `source`.
pub async fn run(
    remediate: RemediateConfig,
    nats: NatsConfig,
    compose: ComposeClient,
    source: String,
    shutdown: CancellationToken,
) -> Result<(), RemediateError> {
    let consumer = Consumer::connect(&nats).await?;
    let remediator = Remediator::start(remediate, &nats, compose, source).await?;
    remediator.run(&consumer, shutdown).await
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
    use pc_eventd_events::event::EventType;

    fn trigger(event_type: EventType, pid: i64) -> LifecycleEvent {
        let mut event = pc_eventd_events::event::example_event();
        event.event_type = event_type;
        event.state.pid = pid;
        event
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
        let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            schema["properties"]["trigger"]["properties"]["type"]["enum"],
            serde_json::json!(types),
            "every event type can trigger"
        );
    }
}
