//! The `[remediate]` section: which triggers, which processes, which policy.

use std::time::Duration;

use pc_eventd_events::consumer::Durable;
use pc_eventd_events::event::{EventType, Resource};
use pc_eventd_events::nats::{NatsConfig, StreamConfig};
use pc_eventd_events::pattern::ProcessPattern;
use pc_eventd_events::remediation::{DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX};
use serde::{Deserialize, Serialize};

use super::policy::{Policies, Policy, Rule, Triggers};

/// `pc-eventd remediate`: which triggers, which processes, which policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediateConfig {
    /// The event types that trigger a restart. `resource_pressure` and `given_up` are
    /// opt-in; a file watcher's restart (`reason: file_watch`) never is one.
    pub on: Vec<EventType>,
    /// With `resource_pressure` in `on`: the resources whose pressure triggers a restart
    /// (`memory`, `cpu`). CPU pressure only when listed: a busy process is not a broken one.
    pub pressure_resources: Vec<Resource>,
    /// Decide and publish, but never call process-compose's restart.
    pub dry_run: bool,
    /// The durable consumer's name: its position survives restarts of the remediator.
    pub durable: String,
    /// Outcome events go to `{subject_prefix}.{namespace}.{name}.{action}`.
    pub subject_prefix: String,
    /// The stream that keeps them (created if missing).
    pub stream: String,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Globs on `name` or `namespace/name`; empty allows every process.
    pub allow: Vec<ProcessPattern>,
    /// Globs; a denied process is never restarted.
    pub deny: Vec<ProcessPattern>,
    /// The policy of processes no rule matches.
    pub policy: Policy,
    /// Policies by glob, first match wins (`[[remediate.rules]]` with `match = "db-*"`).
    pub rules: Vec<Rule>,
}

impl Default for RemediateConfig {
    fn default() -> Self {
        Self {
            on: vec![EventType::Crashed, EventType::Unhealthy],
            pressure_resources: vec![Resource::Memory],
            dry_run: false,
            durable: "pc-eventd-remediate".into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            stream: DEFAULT_STREAM.into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            allow: Vec::new(),
            deny: Vec::new(),
            policy: Policy::default(),
            rules: Vec::new(),
        }
    }
}

impl RemediateConfig {
    /// Which lifecycle events call for a decision.
    pub fn triggers(&self) -> Triggers {
        Triggers {
            on: self.on.clone(),
            pressure_resources: self.pressure_resources.clone(),
        }
    }

    /// The allow and deny lists and the policies, ready to decide with.
    pub fn policies(&self) -> Policies {
        Policies {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            rules: self.rules.clone(),
            default: self.policy.clone(),
        }
    }

    /// The NATS settings of the remediation stream: the daemon's connection (`nats`), another
    /// stream and prefix.
    pub fn nats(&self, nats: &NatsConfig) -> NatsConfig {
        NatsConfig {
            subject_prefix: self.subject_prefix.clone(),
            stream: StreamConfig {
                name: self.stream.clone(),
                max_age: self.max_age,
                ..nats.stream.clone()
            },
            ..nats.clone()
        }
    }

    /// What is wrong in this section, as (key, message); empty when nothing is.
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let mut found = Vec::new();
        if self.on.contains(&EventType::ResourcePressure) && self.pressure_resources.is_empty() {
            found.push((
                "pressure_resources".to_owned(),
                "names no resource, but `on` lists resource_pressure",
            ));
        }
        if !Durable::is_valid_name(&self.durable) {
            found.push(("durable".to_owned(), Durable::NAME_RULE));
        }
        let policies = std::iter::once(("policy".to_owned(), &self.policy)).chain(
            self.rules
                .iter()
                .enumerate()
                .map(|(i, rule)| (format!("rules[{i}]"), &rule.policy)),
        );
        for (key, policy) in policies {
            if policy.max_attempts == 0 || policy.window.is_zero() {
                found.push((key, "max_attempts and window must be greater than zero"));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_and_given_up_are_opt_in_and_cpu_is_not_restarted_by_default() {
        let config = RemediateConfig::default();
        assert_eq!(config.on, [EventType::Crashed, EventType::Unhealthy]);
        assert_eq!(config.pressure_resources, [Resource::Memory]);
        assert!(config.problems().is_empty());
    }

    #[test]
    fn pressure_in_on_needs_a_resource() {
        let config = RemediateConfig {
            on: vec![EventType::ResourcePressure],
            pressure_resources: Vec::new(),
            ..RemediateConfig::default()
        };
        assert_eq!(
            config.problems(),
            [(
                "pressure_resources".to_owned(),
                "names no resource, but `on` lists resource_pressure"
            )]
        );
        // Without resource_pressure in `on`, an empty list is harmless.
        let config = RemediateConfig {
            pressure_resources: Vec::new(),
            ..RemediateConfig::default()
        };
        assert!(config.problems().is_empty());
    }
}
