//! Conditions that no status change shows: a process above a memory or CPU threshold for a
//! while, and a process that has printed nothing for too long. They are read from the usage
//! and the last output time in `GET /processes`, at the rate the daemon samples it.
//!
//! Each condition is an episode with hysteresis in time: it begins when the reading has been
//! on the far side of the threshold for the rule's whole duration, and ends only when it has
//! been back for that long, so a reading that wobbles around the threshold does not flap. A
//! pressure episode also ends with its run: a restarted process starts afresh.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use pc_eventd_events::event::{EventType, Pressure, Resource, Silence};
use pc_eventd_events::pattern::{ProcessPattern, any_matches};
use pc_eventd_events::process_compose::model::{ProcessState, parse_time};
use serde::{Deserialize, Serialize};

use super::transition::Transition;

/// The `[conditions]` section: which processes have resource thresholds or a silence threshold,
/// and how often the usage is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConditionRules {
    /// How often `GET /processes` is read for memory, CPU and the last output while the state
    /// stream runs (polling reads them at every poll). process-compose measures a process's
    /// usage when asked, so this bounds what the rules cost it.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// Memory and CPU thresholds; the first rule that selects a process and sets a resource
    /// applies to it.
    pub pressure: Vec<PressureRule>,
    /// Silence thresholds; the first rule that selects a process applies, unless the process
    /// sets process-compose's own `monitor_for: silence`.
    pub silence: Vec<SilenceRule>,
}

impl Default for ConditionRules {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_secs(10),
            pressure: Vec::new(),
            silence: Vec::new(),
        }
    }
}

/// `[[conditions.pressure]]`: "above 512 MiB for 30 s".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PressureRule {
    /// The processes it applies to, `NAME` or `NAMESPACE/NAME` globs (default: every one).
    #[serde(default = "every_process")]
    pub processes: Vec<ProcessPattern>,
    /// Resident memory threshold in bytes (`"512MiB"`).
    #[serde(default, with = "crate::units::byte_size::option")]
    pub memory: Option<u64>,
    /// CPU threshold in percent of one core.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// How long a process must stay above a threshold (and, to recover, under it).
    #[serde(rename = "for", with = "humantime_serde")]
    pub duration: Duration,
}

/// `[[conditions.silence]]`: "no output for 5 min".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRule {
    /// The processes it applies to (default: every one).
    #[serde(default = "every_process")]
    pub processes: Vec<ProcessPattern>,
    /// How long a running process may print nothing.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
}

fn every_process() -> Vec<ProcessPattern> {
    vec![ProcessPattern::any()]
}

impl ConditionRules {
    /// What is wrong in this section, as (key, message); empty when nothing is.
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let mut found = Vec::new();
        if self.sample_interval.is_zero() {
            found.push(("sample_interval".to_owned(), "must be greater than zero"));
        }
        for (i, rule) in self.pressure.iter().enumerate() {
            if rule.memory.is_none() && rule.cpu.is_none() {
                found.push((format!("pressure[{i}]"), "sets neither memory nor cpu"));
            }
            if rule.memory == Some(0) {
                found.push((format!("pressure[{i}].memory"), "must be greater than zero"));
            }
            if rule.cpu.is_some_and(|cpu| !(cpu > 0.0 && cpu.is_finite())) {
                found.push((
                    format!("pressure[{i}].cpu"),
                    "must be a percentage above zero",
                ));
            }
        }
        for (i, rule) in self.silence.iter().enumerate() {
            if rule.after.is_zero() {
                found.push((format!("silence[{i}].after"), "must be greater than zero"));
            }
        }
        found
    }

    /// Whether any rule asks for usage to be read.
    pub fn is_empty(&self) -> bool {
        self.pressure.is_empty() && self.silence.is_empty()
    }

    /// The threshold and duration for `resource` of `namespace/name`, from the first rule that
    /// selects it and sets that resource.
    pub fn threshold(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Option<(f64, Duration)> {
        self.pressure.iter().find_map(|rule| {
            let threshold = match resource {
                Resource::Memory => rule.memory.map(|bytes| bytes as f64),
                Resource::Cpu => rule.cpu,
            }?;
            any_matches(&rule.processes, namespace, name).then_some((threshold, rule.duration))
        })
    }

    /// The silence threshold of the first rule that selects `namespace/name`.
    pub fn silence_after(&self, namespace: &str, name: &str) -> Option<Duration> {
        self.silence
            .iter()
            .find(|rule| any_matches(&rule.processes, namespace, name))
            .map(|rule| rule.after)
    }
}

/// What a process's conditions were at the last sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ConditionState {
    /// Per resource with a threshold.
    #[serde(default)]
    pub(super) pressure: BTreeMap<Resource, Episode>,
    /// Whether `silent` was reported and not yet followed by `output_resumed`.
    #[serde(default)]
    pub(super) silence: Episode,
    /// The last output time that `silent` reported, to tell how long the silence lasted.
    #[serde(default)]
    pub(super) silent_since: Option<String>,
}

/// One condition's episode: whether it is on, and since when the readings have said otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Episode {
    pub(super) active: bool,
    /// When the readings crossed to the other side of the threshold (above it while inactive,
    /// under it while active); `None` while they agree with `active`.
    pub(super) crossing_since: Option<SystemTime>,
    /// The run (incarnation, restarts) whose readings these are: a pressure episode belongs to
    /// one run. (`None` in records stored before it existed: the current run.)
    #[serde(default)]
    pub(super) run: Option<(String, u32)>,
}

impl Episode {
    /// Makes this the episode of `run`. The run under pressure ended (a restart, perhaps the
    /// remediator's): its episode ends with the new run's first reading, and the new run
    /// starts its own, so one that leaks again is under pressure again. True when an active
    /// episode ended.
    fn belong_to(&mut self, run: &(String, u32)) -> bool {
        let ended_active = match &self.run {
            Some(of) if of != run => std::mem::take(self).active,
            _ => false,
        };
        self.run = Some(run.clone());
        ended_active
    }

    /// Takes one reading (`beyond`: on the far side of the threshold) at `at`; true when the
    /// episode flips, after the readings said so for `hold`.
    fn read(&mut self, beyond: bool, at: SystemTime, hold: Duration) -> bool {
        if beyond == self.active {
            self.crossing_since = None;
            return false;
        }
        let since = *self.crossing_since.get_or_insert(at);
        if at.duration_since(since).unwrap_or_default() >= hold {
            self.active = beyond;
            self.crossing_since = None;
            return true;
        }
        false
    }
}

/// A process's memory and CPU at the last sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Resident bytes.
    pub mem: i64,
    /// Percent of one core.
    pub cpu: f64,
}

impl Usage {
    /// What `state` (from `GET /processes`) measured, if it measured the process: not for a
    /// daemon (`mem` -1) or before process-compose's first sample (0).
    pub fn measured(state: &ProcessState) -> Option<Self> {
        (state.mem > 0).then_some(Self {
            mem: state.mem,
            cpu: state.cpu,
        })
    }
}

/// The resource readings of a process that runs and was measured, by resource.
fn readings(state: &ProcessState) -> Option<[(Resource, f64); 2]> {
    // One that is not running has no reading: its figures are those of its last run.
    let usage = Usage::measured(state).filter(|_| state.status.normalized().is_running())?;
    Some([
        (Resource::Memory, usage.mem as f64),
        (Resource::Cpu, usage.cpu),
    ])
}

/// The conditions of one sampled process: the transitions of its pressure and silence
/// episodes at `at`.
pub(super) fn sample(
    state: &mut ConditionState,
    run_began_at: Option<SystemTime>,
    now: &ProcessState,
    at: SystemTime,
    rules: &ConditionRules,
    silence_after: Option<Duration>,
    run: &(String, u32),
) -> Vec<Transition> {
    let mut out = pressure(state, now, at, rules, run);
    out.extend(silence(state, run_began_at, now, at, silence_after, run));
    out
}

/// The pressure episodes of each resource with a threshold, from this sample's readings.
fn pressure(
    state: &mut ConditionState,
    now: &ProcessState,
    at: SystemTime,
    rules: &ConditionRules,
    run: &(String, u32),
) -> Vec<Transition> {
    let mut out = Vec::new();
    let namespace = now.primary_namespace();
    for (resource, value) in readings(now).into_iter().flatten() {
        let Some((threshold, hold)) = rules.threshold(resource, namespace, &now.name) else {
            state.pressure.remove(&resource);
            continue;
        };
        let episode = state.pressure.entry(resource).or_default();
        let pressure = Pressure {
            resource,
            value,
            threshold,
            for_seconds: hold.as_secs(),
        };
        if episode.belong_to(run) {
            out.push(
                Transition::new(EventType::ResourceRecovered, run.clone())
                    .pressure(pressure.clone()),
            );
        }
        if episode.read(value > threshold, at, hold) {
            let event_type = if episode.active {
                EventType::ResourcePressure
            } else {
                EventType::ResourceRecovered
            };
            out.push(Transition::new(event_type, run.clone()).pressure(pressure));
        }
    }
    out
}

/// `silent` when a running process has printed nothing (since its last output, or since its
/// run began) for longer than `after`; `output_resumed` as soon as it prints again.
fn silence(
    state: &mut ConditionState,
    run_began_at: Option<SystemTime>,
    now: &ProcessState,
    at: SystemTime,
    after: Option<Duration>,
    run: &(String, u32),
) -> Option<Transition> {
    let after = after?;
    let last_output = now.last_activity_time.clone();
    let said = if state.silence.active {
        resumed(state, last_output, after)?
    } else {
        went_silent(state, last_output, run_began_at, now, at, after)?
    };
    Some(Transition::new(said.0, run.clone()).silence(said.1))
}

/// A silence reported ends with any output since, whether or not the process still runs.
fn resumed(
    state: &mut ConditionState,
    last_output: Option<String>,
    after: Duration,
) -> Option<(EventType, Silence)> {
    if last_output.is_none() || last_output == state.silent_since {
        return None;
    }
    let silent_seconds = state
        .silent_since
        .as_deref()
        .and_then(parse_time)
        .zip(last_output.as_deref().and_then(parse_time))
        .and_then(|(from, to)| to.duration_since(from).ok())
        .map(|silent| silent.as_secs());
    state.silence = Episode::default();
    state.silent_since = None;
    let silence = Silence {
        threshold_seconds: after.as_secs(),
        last_output,
        silent_seconds,
    };
    Some((EventType::OutputResumed, silence))
}

/// A running process quiet for longer than `after` at `at` is silent.
fn went_silent(
    state: &mut ConditionState,
    last_output: Option<String>,
    run_began_at: Option<SystemTime>,
    now: &ProcessState,
    at: SystemTime,
    after: Duration,
) -> Option<(EventType, Silence)> {
    if !now.status.normalized().is_running() {
        return None;
    }
    let quiet_since = last_output
        .as_deref()
        .and_then(parse_time)
        .or(run_began_at)?;
    if at.duration_since(quiet_since).unwrap_or_default() <= after {
        return None;
    }
    state.silence.active = true;
    state.silent_since = last_output.clone();
    let silence = Silence {
        threshold_seconds: after.as_secs(),
        last_output,
        silent_seconds: None,
    };
    Some((EventType::Silent, silence))
}
