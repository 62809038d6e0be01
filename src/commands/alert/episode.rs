//! Episodes: a crash loop is one story, not one alert per crash. Pure: events and the clock go
//! in, the alerts to send come out.
//!
//! An episode of a process and event type opens with the first event (alert `opened`), is
//! escalated once when it reaches `escalate_after` events (alert `escalated`), and is resolved
//! when `quiet_period` passes without another (alert `resolved`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use pc_eventd_events::event::{EventType, LifecycleEvent, Severity, timestamp};
use serde::Serialize;

/// Namespace for the v5 UUIDs of episodes.
const EPISODE_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x71d4_0a6e_c2b9_4f35_8e17_5b90_d3a6_2c4f);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlertKind {
    Opened,
    Escalated,
    Resolved,
}

/// One webhook call's body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Alert {
    pub alert: AlertKind,
    /// The same for every alert of one episode (UUID v5 of its first event's id).
    pub episode: String,
    pub process: String,
    pub namespace: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub severity: Severity,
    /// Events in the episode so far.
    pub count: u32,
    pub first_at: String,
    pub last_at: String,
    /// `default/web crashed 5 times since 2026-11-27T09:53:31.000Z`.
    pub summary: String,
    /// The episode's latest event, as published.
    pub event: LifecycleEvent,
}

#[derive(Debug, Clone)]
struct Episode {
    id: String,
    first_at: SystemTime,
    last_at: SystemTime,
    count: u32,
    escalated: bool,
    last: LifecycleEvent,
}

impl Episode {
    fn alert(&self, kind: AlertKind) -> Alert {
        let event = &self.last;
        let severity = match kind {
            AlertKind::Resolved => Severity::Info,
            _ => event.severity,
        };
        let mut times = format!(
            "{} {} time{} since {}",
            event.event_type,
            self.count,
            if self.count == 1 { "" } else { "s" },
            timestamp(self.first_at)
        );
        if let Some(detail) = event.detail() {
            times.push_str(&format!(", last {detail}"));
        }
        let summary = match kind {
            AlertKind::Resolved => {
                format!("{}/{} resolved: {times}", event.namespace, event.process)
            }
            _ => format!("{}/{} {times}", event.namespace, event.process),
        };
        Alert {
            alert: kind,
            episode: self.id.clone(),
            process: event.process.clone(),
            namespace: event.namespace.clone(),
            source: event.source.clone(),
            event_type: event.event_type,
            severity,
            count: self.count,
            first_at: timestamp(self.first_at),
            last_at: timestamp(self.last_at),
            summary,
            event: event.clone(),
        }
    }
}

/// The open episodes, by (source, namespace/name, type).
#[derive(Debug, Clone)]
pub(crate) struct Episodes {
    escalate_after: u32,
    quiet_period: Duration,
    open: BTreeMap<(String, String, EventType), Episode>,
}

impl Episodes {
    pub(crate) fn new(escalate_after: u32, quiet_period: Duration) -> Self {
        Self {
            escalate_after,
            quiet_period,
            open: BTreeMap::new(),
        }
    }

    /// The alerts `event` causes. Its own time is used (a backlog read after a pause is
    /// grouped as it happened); one older than the open episode's quiet period resolves it
    /// and opens a new one.
    pub(crate) fn on_event(&mut self, event: &LifecycleEvent) -> Vec<Alert> {
        let at = humantime::parse_rfc3339(&event.timestamp).unwrap_or_else(|_| SystemTime::now());
        let key = (
            event.source.clone(),
            format!("{}/{}", event.namespace, event.process),
            event.event_type,
        );
        let mut alerts = Vec::new();
        if let Some(episode) = self.open.get(&key)
            && quiet_since(episode.last_at, at) >= self.quiet_period
        {
            alerts.push(episode.alert(AlertKind::Resolved));
            self.open.remove(&key);
        }
        match self.open.get_mut(&key) {
            None => {
                let episode = Episode {
                    id: uuid::Uuid::new_v5(&EPISODE_ID_NAMESPACE, event.id.as_bytes()).to_string(),
                    first_at: at,
                    last_at: at,
                    count: 1,
                    // With nothing to escalate to, an episode is one alert and its resolution.
                    escalated: self.escalate_after <= 1,
                    last: event.clone(),
                };
                alerts.push(episode.alert(AlertKind::Opened));
                self.open.insert(key, episode);
            }
            Some(episode) => {
                episode.count += 1;
                episode.last_at = episode.last_at.max(at);
                episode.last = event.clone();
                if !episode.escalated && episode.count >= self.escalate_after {
                    episode.escalated = true;
                    alerts.push(episode.alert(AlertKind::Escalated));
                }
            }
        }
        alerts
    }

    /// Resolves the episodes quiet for `quiet_period` at `now`.
    pub(crate) fn resolve_quiet(&mut self, now: SystemTime) -> Vec<Alert> {
        let quiet = self.quiet_period;
        let mut resolved = Vec::new();
        self.open.retain(|_, episode| {
            let done = quiet_since(episode.last_at, now) >= quiet;
            if done {
                resolved.push(episode.alert(AlertKind::Resolved));
            }
            !done
        });
        resolved
    }
}

fn quiet_since(last: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(last).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash(n: u64, at_secs: u64) -> LifecycleEvent {
        let mut event = pc_eventd_events::event::example_event();
        event.id = format!("crash-{n}");
        event.event_type = EventType::Crashed;
        event.severity = Severity::Error;
        event.timestamp = timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs));
        event
    }

    fn kinds(alerts: &[Alert]) -> Vec<(AlertKind, u32)> {
        alerts.iter().map(|a| (a.alert, a.count)).collect()
    }

    #[test]
    fn a_crash_loop_is_one_episode_opened_escalated_once_and_resolved() {
        let mut episodes = Episodes::new(3, Duration::from_secs(60));
        let mut alerts = Vec::new();
        for n in 0..6 {
            alerts.extend(episodes.on_event(&crash(n, 1000 + n * 5)));
        }
        assert_eq!(
            kinds(&alerts),
            [(AlertKind::Opened, 1), (AlertKind::Escalated, 3)]
        );
        let episode = &alerts[0].episode;
        assert!(alerts.iter().all(|a| &a.episode == episode));
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert!(episodes.resolve_quiet(at(1080)).is_empty(), "55 s of quiet");
        let resolved = episodes.resolve_quiet(at(1086));
        assert_eq!(kinds(&resolved), [(AlertKind::Resolved, 6)]);
        assert_eq!(&resolved[0].episode, episode);
        assert_eq!(resolved[0].severity, Severity::Info);
        assert_eq!(alerts[0].severity, Severity::Error);
        assert_eq!(
            alerts[0].summary,
            "default/web crashed 1 time since 1970-01-01T00:16:40.000Z, last exit=2"
        );
        assert_eq!(
            resolved[0].summary,
            "default/web resolved: crashed 6 times since 1970-01-01T00:16:40.000Z, last exit=2"
        );
        assert!(episodes.resolve_quiet(at(2000)).is_empty(), "once");
    }

    #[test]
    fn a_crash_after_the_quiet_period_resolves_and_opens_a_new_episode() {
        let mut episodes = Episodes::new(3, Duration::from_secs(60));
        episodes.on_event(&crash(0, 1000));
        let alerts = episodes.on_event(&crash(1, 1100));
        assert_eq!(
            kinds(&alerts),
            [(AlertKind::Resolved, 1), (AlertKind::Opened, 1)]
        );
        assert_ne!(alerts[0].episode, alerts[1].episode);
    }

    #[test]
    fn the_summary_says_what_the_last_event_was() {
        let mut episodes = Episodes::new(3, Duration::from_secs(60));
        let mut crash = crash(0, 1000);
        crash.exit_code = Some(3);
        crash.process = "api".into();
        assert_eq!(
            episodes.on_event(&crash)[0].summary,
            "default/api crashed 1 time since 1970-01-01T00:16:40.000Z, last exit=3"
        );
        let mut restart = pc_eventd_events::event::example_event();
        restart.reason = Some(pc_eventd_events::event::Reason::ManualRestart);
        restart.timestamp = timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(
            episodes.on_event(&restart)[0].summary,
            "default/web restarted 1 time since 1970-01-01T00:16:40.000Z, last manual"
        );
    }

    #[test]
    fn processes_and_types_have_their_own_episodes() {
        let mut episodes = Episodes::new(2, Duration::from_secs(60));
        let mut other = crash(1, 1001);
        other.process = "api".into();
        let mut unhealthy = crash(2, 1002);
        unhealthy.event_type = EventType::Unhealthy;
        let alerts: Vec<_> = [crash(0, 1000), other, unhealthy]
            .iter()
            .flat_map(|e| episodes.on_event(e))
            .collect();
        assert_eq!(kinds(&alerts), [(AlertKind::Opened, 1); 3]);
    }
}
