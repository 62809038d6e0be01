//! Remediation events: what `pc-eventd remediate` decided about each trigger, published on
//! `{remediate.subject_prefix}.{namespace}.{name}.{action}` in their own stream (see
//! `schema/remediation-event.schema.json`).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::event::{EventType, LifecycleEvent, Severity, SubjectScheme, timestamp};
use crate::publish::Publishable;

/// The subject prefix of remediation events unless configured otherwise.
pub const DEFAULT_SUBJECT_PREFIX: &str = "core.remediation";
/// The stream of remediation events unless configured otherwise.
pub const DEFAULT_STREAM: &str = "REMEDIATION_EVENTS";

/// Namespace for the v5 UUIDs of remediation events.
const REMEDIATION_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x2b8c_93f1_5e04_4a7d_b1c6_0f3e_9d52_7a18);

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
    /// The action as it appears in subjects and payloads.
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
    /// The lifecycle event's id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Its `seq`.
    pub seq: u64,
    /// Its timestamp.
    pub timestamp: String,
}

/// One decision of the remediator, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationEvent {
    /// UUID v5 of (trigger id, action): a redelivered trigger that ends the same way is stored
    /// once (also the `Nats-Msg-Id` header).
    pub id: String,
    /// What was done.
    pub action: Action,
    /// The process's name.
    pub process: String,
    /// Its namespace.
    pub namespace: String,
    /// The process-compose instance (the trigger's `source`).
    pub source: String,
    /// The subject it was published on.
    pub subject: String,
    /// How much it matters: info, warning for a skip, error for a failed restart.
    pub severity: Severity,
    /// RFC 3339, UTC: when the decision was made.
    pub timestamp: String,
    /// The lifecycle event that led to it.
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
    /// Decided in a dry run: nothing was restarted.
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

    /// The event for `action` taken on `trigger` now, its subject from `scheme`. Its id
    /// depends only on the trigger's id and the action.
    pub fn new(
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
            subject: scheme.subject_of_kind(
                &trigger.source,
                &trigger.namespace,
                &trigger.process,
                action.as_str(),
            ),
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

impl Publishable for RemediationEvent {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        self.action.as_str()
    }
}
