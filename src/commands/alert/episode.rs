//! Episodes: a crash loop is one story, not one alert per crash. Pure: events and the clock go
//! in, the alerts to send come out.
//!
//! Two kinds of episode:
//!
//! - **Counted** (`crashed`, `unhealthy`, and any other type listed but those below): an episode
//!   of a process and event type opens with the first event (alert `opened`), is escalated once
//!   when it reaches `escalate_after` events (alert `escalated`), and is resolved when
//!   `quiet_period` passes without another (alert `resolved`).
//! - **Conditions** (`given_up`, `resource_pressure` per resource, `silent`): the event says a
//!   state began, and another event says it ended, so no quiet period resolves them. The
//!   episode opens with the event (alert `opened`) and is resolved by its end: the process's
//!   next `started` or `restarted` for `given_up`, `resource_recovered` of the same resource
//!   for `resource_pressure`, `output_resumed` for `silent`. Every `given_up` pages (it is
//!   critical, and apart from the crash episode that led to it): one that comes while an
//!   earlier one is open (the process ran again unseen) resolves it and opens a new episode.
//!
//! A `stopped` or `restarted` made by process-compose's file watcher (reason `file_watch`) is
//! neither a failure nor a recovery: it changes nothing. A crash's last output rides in its
//! alerts (`output`, and the lines in `text`), at most `output_max_bytes` of it, newest lines
//! kept; a `given_up` alert carries the output of the crash that preceded it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use pc_eventd_events::event::{
    EventType, LifecycleEvent, ProcessOutput, Reason, Resource, Severity, timestamp,
};
use serde::Serialize;

use super::config::AlertConfig;

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
    /// The episode's type: what opened it.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The episode's type's severity (`critical` for `given_up`); `info` when resolved.
    pub severity: Severity,
    /// Events in the episode so far.
    pub count: u32,
    pub first_at: String,
    pub last_at: String,
    /// One line: `default/web crashed 5 times since 2026-11-27T09:53:31.000Z, last exit=2`.
    pub summary: String,
    /// For people (chat webhooks): the summary, then the crash's last output lines (for
    /// `opened` and `escalated`), or why there are none.
    pub text: String,
    /// The last output of the crash, capped at `output_max_bytes` (newest lines kept,
    /// `truncated` set when lines were left out); absent when the episode has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<ProcessOutput>,
    /// The episode's latest event, as published, but for its `output`, which is the alert's
    /// `output` above (not sent twice). For a resolved condition, the event that ended it.
    pub event: LifecycleEvent,
}

/// What an episode is about, beside its process: the type that opened it, and for
/// `resource_pressure` the resource.
type Topic = (EventType, Option<Resource>);

/// (source, `namespace/name`, topic).
type Key = (String, String, Topic);

/// What one event does to the episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Opens or adds to a counted episode.
    Counts,
    /// Opens a condition episode.
    Begins(Topic),
    /// Ends a condition episode.
    Ends(Topic),
}

/// The condition types, and the types that end each.
const CONDITIONS: [(EventType, &[EventType]); 3] = [
    (
        EventType::GivenUp,
        &[EventType::Started, EventType::Restarted],
    ),
    (EventType::ResourcePressure, &[EventType::ResourceRecovered]),
    (EventType::Silent, &[EventType::OutputResumed]),
];

/// The types the sink reads for alerting on `types`: those, and what ends the conditions among
/// them (`resource_recovered` for `resource_pressure`, …). Empty (every type) stays empty.
pub(crate) fn read_types(types: &[EventType]) -> Vec<EventType> {
    let mut read = types.to_vec();
    for (condition, ends) in CONDITIONS {
        if types.contains(&condition) {
            read.extend_from_slice(ends);
        }
    }
    read.sort();
    read.dedup();
    read
}

/// The topic of a `condition` episode that `event` begins or ends: with the resource for
/// `resource_pressure`.
fn topic(condition: EventType, event: &LifecycleEvent) -> Topic {
    let resource = event.pressure.as_ref().map(|p| p.resource);
    (
        condition,
        resource.filter(|_| condition == EventType::ResourcePressure),
    )
}

fn is_condition(event_type: EventType) -> bool {
    CONDITIONS.iter().any(|(c, _)| *c == event_type)
}

#[derive(Debug, Clone)]
struct Episode {
    id: String,
    event_type: EventType,
    first_at: SystemTime,
    last_at: SystemTime,
    count: u32,
    escalated: bool,
    last: LifecycleEvent,
    /// The output its alerts show, capped.
    output: Option<ProcessOutput>,
}

impl Episode {
    fn new(event: &LifecycleEvent, at: SystemTime, escalated: bool) -> Self {
        Self {
            id: uuid::Uuid::new_v5(&EPISODE_ID_NAMESPACE, event.id.as_bytes()).to_string(),
            event_type: event.event_type,
            first_at: at,
            last_at: at,
            count: 1,
            escalated,
            last: event.clone(),
            output: None,
        }
    }

    fn alert(&self, kind: AlertKind) -> Alert {
        let event = &self.last;
        let severity = match kind {
            AlertKind::Resolved => Severity::Info,
            _ => self.event_type.severity(),
        };
        let summary = if is_condition(self.event_type) {
            self.condition_summary(kind)
        } else {
            self.counted_summary(kind)
        };
        let mut text = summary.clone();
        if kind != AlertKind::Resolved
            && let Some(output) = &self.output
        {
            text.push('\n');
            text.push_str(&render_output(output));
        }
        let mut event = event.clone();
        event.output = None;
        Alert {
            alert: kind,
            episode: self.id.clone(),
            process: event.process.clone(),
            namespace: event.namespace.clone(),
            source: event.source.clone(),
            event_type: self.event_type,
            severity,
            count: self.count,
            first_at: timestamp(self.first_at),
            last_at: timestamp(self.last_at),
            summary,
            text,
            output: self.output.clone(),
            event,
        }
    }

    /// `default/web crashed 5 times since …, last exit=2`.
    fn counted_summary(&self, kind: AlertKind) -> String {
        let event = &self.last;
        let mut times = format!(
            "{} {} time{} since {}",
            self.event_type,
            self.count,
            if self.count == 1 { "" } else { "s" },
            timestamp(self.first_at)
        );
        if let Some(detail) = event.detail() {
            times.push_str(&format!(", last {detail}"));
        }
        match kind {
            AlertKind::Resolved => {
                format!("{}/{} resolved: {times}", event.namespace, event.process)
            }
            _ => format!("{}/{} {times}", event.namespace, event.process),
        }
    }

    /// `default/web given_up at …: policy=no, restarts=0`; resolved: `default/web resolved:
    /// resource_pressure at …, then resource_recovered (memory 300 MiB < 512 MiB for 30s)`.
    fn condition_summary(&self, kind: AlertKind) -> String {
        let event = &self.last;
        let began = format!("{} at {}", self.event_type, timestamp(self.first_at));
        let process = format!("{}/{}", event.namespace, event.process);
        match kind {
            AlertKind::Resolved => {
                let detail = event
                    .detail()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                format!(
                    "{process} resolved: {began}, then {}{detail}",
                    event.event_type
                )
            }
            _ => match event.detail() {
                Some(detail) => format!("{process} {began}: {detail}"),
                None => format!("{process} {began}"),
            },
        }
    }
}

/// The output for people: the lines under a heading that says what was left out, or why
/// there are none.
fn render_output(output: &ProcessOutput) -> String {
    let mut notes = Vec::new();
    if output.truncated {
        notes.push("earlier output left out".to_owned());
    }
    if output.redacted > 0 {
        notes.push(format!("{} redacted", output.redacted));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    if output.lines.is_empty() {
        return match &output.unavailable {
            Some(why) => format!("last output unavailable: {why}"),
            None => format!("no output{notes}"),
        };
    }
    let mut text = format!("last output{notes}:");
    for line in &output.lines {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

/// `output` within `max_bytes` of lines: the newest lines that fit, a newest line longer than
/// that alone cut at a character boundary; `truncated` when anything was left out. `None` when
/// `max_bytes` is 0 (no output in alerts).
fn cap_output(output: &ProcessOutput, max_bytes: usize) -> Option<ProcessOutput> {
    (max_bytes > 0).then(|| output.clone().keep_newest(max_bytes))
}

/// The open episodes, by (source, namespace/name, topic).
#[derive(Debug, Clone)]
pub(crate) struct Episodes {
    /// The types that alert; empty: every type.
    types: Vec<EventType>,
    escalate_after: u32,
    quiet_period: Duration,
    output_max_bytes: usize,
    open: BTreeMap<Key, Episode>,
}

impl Episodes {
    pub(crate) fn new(settings: &AlertConfig) -> Self {
        Self {
            types: settings.types.clone(),
            escalate_after: settings.escalate_after,
            quiet_period: settings.quiet_period,
            output_max_bytes: settings.output_max_bytes,
            open: BTreeMap::new(),
        }
    }

    fn alerts_on(&self, event_type: EventType) -> bool {
        self.types.is_empty() || self.types.contains(&event_type)
    }

    /// What `event` does. A stop or restart by the file watcher does nothing; a type that
    /// ends a condition ends it, and `resource_recovered` and `output_resumed` do nothing else
    /// (`started` and `restarted` also count when they are listed).
    fn roles(&self, event: &LifecycleEvent) -> Vec<Role> {
        let t = event.event_type;
        if event.reason == Some(Reason::FileWatch) {
            return Vec::new();
        }
        if is_condition(t) {
            return if self.alerts_on(t) {
                vec![Role::Begins(topic(t, event))]
            } else {
                Vec::new()
            };
        }
        let mut roles: Vec<Role> = CONDITIONS
            .iter()
            .filter(|(_, ends)| ends.contains(&t))
            .map(|(condition, _)| Role::Ends(topic(*condition, event)))
            .collect();
        let ends_only = matches!(t, EventType::ResourceRecovered | EventType::OutputResumed);
        if !ends_only && self.alerts_on(t) {
            roles.push(Role::Counts);
        }
        roles
    }

    /// The alerts `event` causes. Its own time is used (a backlog read after a pause is
    /// grouped as it happened); one older than the open episode's quiet period resolves it
    /// and opens a new one. An event that is already its episode's latest (a redelivery)
    /// changes nothing.
    pub(crate) fn on_event(&mut self, event: &LifecycleEvent) -> Vec<Alert> {
        let at = humantime::parse_rfc3339(&event.timestamp).unwrap_or_else(|_| SystemTime::now());
        let process = format!("{}/{}", event.namespace, event.process);
        let key = |topic: Topic| (event.source.clone(), process.clone(), topic);
        let mut alerts = Vec::new();
        for role in self.roles(event) {
            match role {
                Role::Counts => alerts.extend(self.count(key((event.event_type, None)), event, at)),
                Role::Begins(topic) => alerts.extend(self.begin(key(topic), event, at)),
                Role::Ends(topic) => {
                    if let Some(mut episode) = self.open.remove(&key(topic)) {
                        episode.last = event.clone();
                        episode.last_at = episode.last_at.max(at);
                        alerts.push(episode.alert(AlertKind::Resolved));
                    }
                }
            }
        }
        alerts
    }

    /// A counted episode: opened, escalated once, resolved by quiet.
    fn count(&mut self, key: Key, event: &LifecycleEvent, at: SystemTime) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if let Some(episode) = self.open.get(&key) {
            if episode.last.id == event.id {
                return alerts;
            }
            if quiet_since(episode.last_at, at) >= self.quiet_period {
                alerts.push(episode.alert(AlertKind::Resolved));
                self.open.remove(&key);
            }
        }
        let output = event
            .output
            .as_ref()
            .and_then(|o| cap_output(o, self.output_max_bytes));
        match self.open.get_mut(&key) {
            None => {
                // With nothing to escalate to, an episode is one alert and its resolution.
                let mut episode = Episode::new(event, at, self.escalate_after <= 1);
                episode.output = output;
                alerts.push(episode.alert(AlertKind::Opened));
                self.open.insert(key, episode);
            }
            Some(episode) => {
                episode.count += 1;
                episode.last_at = episode.last_at.max(at);
                episode.last = event.clone();
                episode.output = output;
                if !episode.escalated && episode.count >= self.escalate_after {
                    episode.escalated = true;
                    alerts.push(episode.alert(AlertKind::Escalated));
                }
            }
        }
        alerts
    }

    /// A condition episode: opened once, until what ends it; another `given_up` is a new one.
    fn begin(&mut self, key: Key, event: &LifecycleEvent, at: SystemTime) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if let Some(episode) = self.open.get_mut(&key) {
            if episode.last.id == event.id {
                return alerts;
            }
            if event.event_type != EventType::GivenUp {
                episode.count += 1;
                episode.last_at = episode.last_at.max(at);
                episode.last = event.clone();
                return alerts;
            }
            let mut ended = self.open.remove(&key).expect("open");
            ended.last = event.clone();
            ended.last_at = ended.last_at.max(at);
            alerts.push(ended.alert(AlertKind::Resolved));
        }
        let mut episode = Episode::new(event, at, true);
        if event.event_type == EventType::GivenUp {
            // The crash that made the process give up, published just before it.
            let crash = (key.0.clone(), key.1.clone(), (EventType::Crashed, None));
            episode.output = self
                .open
                .get(&crash)
                .filter(|c| c.last.seq < event.seq)
                .and_then(|c| c.output.clone());
        }
        alerts.push(episode.alert(AlertKind::Opened));
        self.open.insert(key, episode);
        alerts
    }

    /// Resolves the counted episodes quiet for `quiet_period` at `now`; conditions wait for
    /// what ends them.
    pub(crate) fn resolve_quiet(&mut self, now: SystemTime) -> Vec<Alert> {
        let quiet = self.quiet_period;
        let mut resolved = Vec::new();
        self.open.retain(|_, episode| {
            let done =
                !is_condition(episode.event_type) && quiet_since(episode.last_at, now) >= quiet;
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
    use pc_eventd_events::event::{GivenUp, GivenUpPolicy, Pressure, Silence};

    use super::*;

    fn settings(escalate_after: u32, quiet_secs: u64) -> AlertConfig {
        AlertConfig {
            escalate_after,
            quiet_period: Duration::from_secs(quiet_secs),
            ..AlertConfig::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// An event of `event_type` of `default/web`, number `n` (its id and seq), at `at_secs`.
    fn event(event_type: EventType, n: u64, at_secs: u64) -> LifecycleEvent {
        let mut event = pc_eventd_events::event::example_event();
        event.id = format!("{event_type}-{n}");
        event.seq = n;
        event.event_type = event_type;
        event.severity = event_type.severity();
        event.reason = None;
        event.timestamp = timestamp(at(at_secs));
        event
    }

    fn crash(n: u64, at_secs: u64) -> LifecycleEvent {
        event(EventType::Crashed, n, at_secs)
    }

    fn crash_with(n: u64, at_secs: u64, lines: &[&str]) -> LifecycleEvent {
        let mut crash = crash(n, at_secs);
        crash.output = Some(ProcessOutput {
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            truncated: false,
            redacted: 0,
            unavailable: None,
        });
        crash
    }

    fn given_up(n: u64, at_secs: u64) -> LifecycleEvent {
        let mut event = event(EventType::GivenUp, n, at_secs);
        event.given_up = Some(GivenUp {
            policy: GivenUpPolicy::No,
            restarts: 0,
            max_restarts: None,
        });
        event
    }

    fn pressure(event_type: EventType, n: u64, resource: Resource, value: f64) -> LifecycleEvent {
        let mut event = event(event_type, n, 1000 + n);
        event.pressure = Some(Pressure {
            resource,
            value,
            threshold: 90.0,
            for_seconds: 10,
        });
        event
    }

    fn kinds(alerts: &[Alert]) -> Vec<(AlertKind, u32)> {
        alerts.iter().map(|a| (a.alert, a.count)).collect()
    }

    fn typed(alerts: &[Alert]) -> Vec<(AlertKind, EventType)> {
        alerts.iter().map(|a| (a.alert, a.event_type)).collect()
    }

    #[test]
    fn a_crash_loop_is_one_episode_opened_escalated_once_and_resolved() {
        let mut episodes = Episodes::new(&settings(3, 60));
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
        assert_eq!(alerts[0].text, alerts[0].summary, "no output, no lines");
        assert!(episodes.resolve_quiet(at(2000)).is_empty(), "once");
    }

    #[test]
    fn a_crash_after_the_quiet_period_resolves_and_opens_a_new_episode() {
        let mut episodes = Episodes::new(&settings(3, 60));
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
        let mut episodes = Episodes::new(&AlertConfig {
            types: vec![EventType::Crashed, EventType::Restarted],
            ..settings(3, 60)
        });
        let mut crash = crash(0, 1000);
        crash.exit_code = Some(3);
        crash.process = "api".into();
        assert_eq!(
            episodes.on_event(&crash)[0].summary,
            "default/api crashed 1 time since 1970-01-01T00:16:40.000Z, last exit=3"
        );
        let mut restart = pc_eventd_events::event::example_event();
        restart.reason = Some(Reason::ManualRestart);
        restart.timestamp = timestamp(at(1000));
        assert_eq!(
            episodes.on_event(&restart)[0].summary,
            "default/web restarted 1 time since 1970-01-01T00:16:40.000Z, last manual"
        );
    }

    #[test]
    fn processes_and_types_have_their_own_episodes() {
        let mut episodes = Episodes::new(&settings(2, 60));
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

    #[test]
    fn a_redelivered_event_changes_nothing() {
        let mut episodes = Episodes::new(&settings(2, 60));
        assert_eq!(episodes.on_event(&crash(0, 1000)).len(), 1);
        assert!(episodes.on_event(&crash(0, 1000)).is_empty(), "not a 2nd");
        let up = given_up(1, 1001);
        assert_eq!(episodes.on_event(&up).len(), 1);
        assert!(episodes.on_event(&up).is_empty(), "the same give-up");
        let resolved = episodes.resolve_quiet(at(2000));
        assert_eq!(kinds(&resolved), [(AlertKind::Resolved, 1)]);
    }

    #[test]
    fn the_types_read_include_what_ends_each_condition() {
        use EventType::*;
        assert_eq!(
            read_types(&AlertConfig::default().types),
            [
                Started,
                Crashed,
                Restarted,
                Unhealthy,
                GivenUp,
                ResourcePressure,
                ResourceRecovered,
                Silent,
                OutputResumed
            ]
        );
        assert_eq!(read_types(&[Crashed, Unhealthy]), [Crashed, Unhealthy]);
        assert_eq!(
            read_types(&[Silent, Crashed]),
            [Crashed, Silent, OutputResumed]
        );
        assert_eq!(read_types(&[]), [], "every type");
    }

    #[test]
    fn a_crash_alert_carries_its_last_output() {
        let mut episodes = Episodes::new(&settings(2, 60));
        let mut first = crash_with(0, 1000, &["starting", "password=[REDACTED]", "fatal: boom"]);
        first.output.as_mut().unwrap().redacted = 1;
        let opened = episodes.on_event(&first);
        assert_eq!(opened[0].output, first.output);
        assert_eq!(opened[0].event.output, None, "sent once, as `output`");
        assert_eq!(
            opened[0].text,
            "default/web crashed 1 time since 1970-01-01T00:16:40.000Z, last exit=2\n\
             last output (1 redacted):\n  starting\n  password=[REDACTED]\n  fatal: boom"
        );
        let json = serde_json::to_value(&opened[0]).unwrap();
        assert_eq!(json["output"]["lines"][2], "fatal: boom");
        assert!(json["event"].get("output").is_none());

        let escalated = episodes.on_event(&crash_with(1, 1005, &["again"]));
        assert_eq!(kinds(&escalated), [(AlertKind::Escalated, 2)]);
        assert!(escalated[0].text.ends_with("\nlast output:\n  again"));
        let resolved = episodes.resolve_quiet(at(2000));
        assert_eq!(resolved[0].output.as_ref().unwrap().lines, ["again"]);
        assert_eq!(
            resolved[0].text, resolved[0].summary,
            "a resolution shows no lines"
        );
    }

    #[test]
    fn output_that_is_cut_or_missing_says_so() {
        let output = |lines: &[&str], truncated, unavailable: Option<&str>| ProcessOutput {
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            truncated,
            redacted: 0,
            unavailable: unavailable.map(str::to_owned),
        };
        assert_eq!(
            render_output(&output(&["b"], true, None)),
            "last output (earlier output left out):\n  b"
        );
        assert_eq!(
            render_output(&output(
                &[],
                false,
                Some("the output was not read within 500ms")
            )),
            "last output unavailable: the output was not read within 500ms"
        );
        assert_eq!(render_output(&output(&[], false, None)), "no output");

        let mut episodes = Episodes::new(&settings(2, 60));
        let mut crash = crash(0, 1000);
        crash.output = Some(output(&[], false, Some("cannot read the output: 404")));
        let alert = &episodes.on_event(&crash)[0];
        assert!(
            alert
                .text
                .ends_with("last exit=2\nlast output unavailable: cannot read the output: 404"),
            "{}",
            alert.text
        );
        assert_eq!(
            alert.output.as_ref().unwrap().unavailable.as_deref(),
            Some("cannot read the output: 404")
        );
    }

    #[test]
    fn output_in_an_alert_is_capped_newest_lines_kept() {
        let output = ProcessOutput {
            lines: vec!["aaaa".into(), "bbbb".into(), "cccc".into()],
            ..ProcessOutput::default()
        };
        let capped = cap_output(&output, 8).unwrap();
        assert_eq!(capped.lines, ["bbbb", "cccc"]);
        assert!(capped.truncated);
        let whole = cap_output(&output, 12).unwrap();
        assert_eq!(whole, output, "within the cap: as it was");
        let was_cut = ProcessOutput {
            truncated: true,
            ..output.clone()
        };
        assert!(
            cap_output(&was_cut, 12).unwrap().truncated,
            "the daemon's cut stays"
        );
        let long = ProcessOutput {
            lines: vec!["old".into(), "ééé".into()],
            ..ProcessOutput::default()
        };
        let cut = cap_output(&long, 3).unwrap();
        assert_eq!(cut.lines, ["é"], "cut at a character boundary");
        assert!(cut.truncated);
        assert_eq!(cap_output(&output, 0), None, "0: no output in alerts");

        let mut episodes = Episodes::new(&AlertConfig {
            output_max_bytes: 8,
            ..settings(2, 60)
        });
        let alert = &episodes.on_event(&crash_with(0, 1000, &["aaaa", "bbbb", "cccc"]))[0];
        assert_eq!(alert.output.as_ref().unwrap().lines, ["bbbb", "cccc"]);
        assert!(alert.text.contains("(earlier output left out)"));
        assert!(!alert.text.contains("aaaa"));
        let mut none = Episodes::new(&AlertConfig {
            output_max_bytes: 0,
            ..settings(2, 60)
        });
        let alert = &none.on_event(&crash_with(0, 1000, &["aaaa"]))[0];
        assert_eq!((&alert.output, alert.text.contains("aaaa")), (&None, false));
    }

    #[test]
    fn giving_up_pages_critical_apart_from_the_crash_episode() {
        // A crash episode that has not escalated yet: its crashes send nothing more.
        let mut episodes = Episodes::new(&settings(5, 60));
        let mut alerts = Vec::new();
        for n in 0..3 {
            alerts.extend(episodes.on_event(&crash_with(n, 1000 + n, &[&format!("run {n}")])));
        }
        alerts.extend(episodes.on_event(&given_up(3, 1003)));
        assert_eq!(
            typed(&alerts),
            [
                (AlertKind::Opened, EventType::Crashed),
                (AlertKind::Opened, EventType::GivenUp)
            ]
        );
        let up = &alerts[1];
        assert_eq!(up.severity, Severity::Critical);
        assert_ne!(up.episode, alerts[0].episode);
        assert_eq!(
            up.summary,
            "default/web given_up at 1970-01-01T00:16:43.000Z: policy=no, restarts=0"
        );
        assert_eq!(
            up.output.as_ref().unwrap().lines,
            ["run 2"],
            "why it gave up"
        );
        assert!(up.text.ends_with("\nlast output:\n  run 2"));
    }

    #[test]
    fn a_given_up_without_an_earlier_crash_has_no_output() {
        let mut episodes = Episodes::new(&settings(5, 60));
        let mut later = crash_with(9, 1000, &["a later run"]);
        later.process = "api".into();
        episodes.on_event(&later);
        let alerts = episodes.on_event(&given_up(3, 1003));
        assert_eq!(alerts[0].output, None, "another process's crash");
        let mut episodes = Episodes::new(&settings(5, 60));
        episodes.on_event(&crash_with(9, 1000, &["after"]));
        assert_eq!(
            episodes.on_event(&given_up(3, 1003))[0].output,
            None,
            "a later crash"
        );
        let mut episodes = Episodes::new(&settings(5, 60));
        episodes.on_event(&crash_with(3, 1000, &["not before it"]));
        assert_eq!(
            episodes.on_event(&given_up(3, 1003))[0].output,
            None,
            "only a crash strictly before it"
        );
    }

    #[test]
    fn a_given_up_is_resolved_when_the_process_runs_again_not_by_quiet() {
        let mut episodes = Episodes::new(&settings(5, 60));
        episodes.on_event(&crash(0, 1000));
        let opened = episodes.on_event(&given_up(1, 1000));
        let quiet = episodes.resolve_quiet(at(5000));
        assert_eq!(typed(&quiet), [(AlertKind::Resolved, EventType::Crashed)]);
        let resolved = episodes.on_event(&event(EventType::Started, 2, 6000));
        assert_eq!(
            typed(&resolved),
            [(AlertKind::Resolved, EventType::GivenUp)]
        );
        let resolved = &resolved[0];
        assert_eq!(resolved.episode, opened[0].episode);
        assert_eq!(resolved.severity, Severity::Info);
        assert_eq!(resolved.event.event_type, EventType::Started);
        assert_eq!(
            resolved.summary,
            "default/web resolved: given_up at 1970-01-01T00:16:40.000Z, then started"
        );
        assert!(
            episodes
                .on_event(&event(EventType::Started, 3, 6001))
                .is_empty(),
            "`started` alone does not alert"
        );

        episodes.on_event(&given_up(4, 7000));
        let mut restart = event(EventType::Restarted, 5, 7001);
        restart.reason = Some(Reason::ManualRestart);
        assert_eq!(
            typed(&episodes.on_event(&restart)),
            [(AlertKind::Resolved, EventType::GivenUp)]
        );
    }

    #[test]
    fn another_given_up_while_one_is_open_pages_again() {
        let mut episodes = Episodes::new(&settings(5, 60));
        let first = episodes.on_event(&given_up(0, 1000));
        let again = episodes.on_event(&given_up(1, 1010));
        assert_eq!(
            kinds(&again),
            [(AlertKind::Resolved, 1), (AlertKind::Opened, 1)]
        );
        assert_eq!(again[0].episode, first[0].episode);
        assert_ne!(again[1].episode, first[0].episode);
        assert_eq!(again[1].severity, Severity::Critical);
    }

    #[test]
    fn pressure_is_resolved_by_the_recovery_of_the_same_resource() {
        use EventType::{ResourcePressure, ResourceRecovered};
        let mut episodes = Episodes::new(&settings(2, 60));
        let memory = episodes.on_event(&pressure(ResourcePressure, 0, Resource::Memory, 95.0));
        assert_eq!(typed(&memory), [(AlertKind::Opened, ResourcePressure)]);
        assert_eq!(memory[0].severity, Severity::Warning);
        let cpu = episodes.on_event(&pressure(ResourcePressure, 1, Resource::Cpu, 95.0));
        assert_eq!(kinds(&cpu), [(AlertKind::Opened, 1)], "its own episode");
        assert_ne!(cpu[0].episode, memory[0].episode);
        assert!(
            episodes
                .on_event(&pressure(ResourcePressure, 2, Resource::Memory, 97.0))
                .is_empty(),
            "still the same pressure: no escalation"
        );
        assert!(episodes.resolve_quiet(at(9000)).is_empty(), "not by quiet");

        let cpu_back = episodes.on_event(&pressure(ResourceRecovered, 3, Resource::Cpu, 10.0));
        assert_eq!(kinds(&cpu_back), [(AlertKind::Resolved, 1)]);
        assert_eq!(cpu_back[0].episode, cpu[0].episode);
        let memory_back =
            episodes.on_event(&pressure(ResourceRecovered, 4, Resource::Memory, 10.0));
        assert_eq!(kinds(&memory_back), [(AlertKind::Resolved, 2)]);
        assert_eq!(memory_back[0].event_type, ResourcePressure);
        assert_eq!(
            cpu[0].summary,
            "default/web resource_pressure at 1970-01-01T00:16:41.000Z: cpu 95.0% > 90.0% for 10s"
        );
        assert_eq!(
            cpu_back[0].summary,
            "default/web resolved: resource_pressure at 1970-01-01T00:16:41.000Z, \
             then resource_recovered (cpu 10.0% < 90.0% for 10s)"
        );
        assert!(
            episodes
                .on_event(&pressure(ResourceRecovered, 5, Resource::Memory, 10.0))
                .is_empty(),
            "a recovery alone does not alert"
        );
    }

    #[test]
    fn silence_is_resolved_when_output_resumes() {
        let mut episodes = Episodes::new(&settings(2, 60));
        let mut silent = event(EventType::Silent, 0, 1000);
        silent.silence = Some(Silence {
            threshold_seconds: 60,
            last_output: None,
            silent_seconds: None,
        });
        let opened = episodes.on_event(&silent);
        assert_eq!(typed(&opened), [(AlertKind::Opened, EventType::Silent)]);
        assert_eq!(opened[0].severity, Severity::Warning);
        assert_eq!(
            opened[0].summary,
            "default/web silent at 1970-01-01T00:16:40.000Z: no output for 60s"
        );
        assert!(episodes.resolve_quiet(at(9000)).is_empty(), "not by quiet");
        let resumed = episodes.on_event(&event(EventType::OutputResumed, 1, 9100));
        assert_eq!(typed(&resumed), [(AlertKind::Resolved, EventType::Silent)]);
        assert_eq!(resumed[0].episode, opened[0].episode);
    }

    #[test]
    fn a_file_watch_stop_or_restart_changes_nothing() {
        use EventType::{GivenUp, Restarted, Stopped};
        let mut episodes = Episodes::new(&AlertConfig {
            types: vec![Stopped, Restarted, GivenUp],
            ..settings(1, 60)
        });
        episodes.on_event(&given_up(0, 1000));
        for (n, event_type) in [(1, Stopped), (2, Restarted)] {
            let mut watched = event(event_type, n, 1000 + n);
            watched.reason = Some(Reason::FileWatch);
            assert!(episodes.on_event(&watched).is_empty(), "{event_type}");
        }
        let mut stop = event(Stopped, 3, 1003);
        stop.reason = Some(Reason::StopRequested);
        assert_eq!(
            typed(&episodes.on_event(&stop)),
            [(AlertKind::Opened, Stopped)]
        );
        let restart = event(Restarted, 4, 1004);
        assert_eq!(
            typed(&episodes.on_event(&restart)),
            [
                (AlertKind::Resolved, GivenUp),
                (AlertKind::Opened, Restarted)
            ],
            "a listed type that ends a condition does both"
        );
    }

    #[test]
    fn a_condition_type_not_listed_does_not_alert() {
        let mut episodes = Episodes::new(&AlertConfig {
            types: vec![EventType::Crashed],
            ..settings(2, 60)
        });
        assert!(episodes.on_event(&given_up(0, 1000)).is_empty());
    }

    #[test]
    fn what_ends_a_condition_never_alerts_by_itself_even_listed() {
        use EventType::{OutputResumed, ResourceRecovered};
        let mut episodes = Episodes::new(&AlertConfig {
            types: vec![ResourceRecovered, OutputResumed],
            ..settings(1, 60)
        });
        let recovered = pressure(ResourceRecovered, 0, Resource::Memory, 1.0);
        assert!(episodes.on_event(&recovered).is_empty());
        assert!(episodes.on_event(&event(OutputResumed, 1, 1001)).is_empty());
    }
}
