//! What the diff keeps between observations: the last state of every process, and what was
//! already reported of its runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pc_eventd_events::event::{LifecycleEvent, Resource};
use pc_eventd_events::process_compose::model::{ProcessState, Readiness};

use super::conditions::{ConditionState, Usage};
use super::settings::ProcessSettings;

/// Everything pc-eventd remembers between two observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub(super) processes: BTreeMap<String, Tracked>,
    /// Last sequence number per process name; kept when a process disappears so that a process
    /// that comes back continues its sequence instead of restarting it.
    pub(super) seqs: BTreeMap<String, u64>,
    /// The last event made of each process now known, for its record (shared: a snapshot is
    /// copied at every observation).
    pub(super) last_events: BTreeMap<String, Arc<LifecycleEvent>>,
    /// The last usage process-compose measured of each process now known, at the last sample
    /// (not stored: it is read again).
    pub(super) usage: BTreeMap<String, Usage>,
}

/// One process as [`Snapshot::views`] shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessView<'a> {
    pub state: &'a ProcessState,
    /// The last sample, if process-compose measured the process in it.
    pub usage: Option<Usage>,
    /// The resources it is over a threshold of.
    pub under_pressure: Vec<Resource>,
    /// process-compose will not restart it again.
    pub given_up: bool,
}

/// One process's entry in a [`Snapshot`], as stored by the state store: opaque outside this
/// module, so that the rules' bookkeeping and its persistence cannot drift apart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRecord {
    pub(super) tracked: Tracked,
    pub(super) seq: u64,
    /// The last event published of the process: the one field readers of the state bucket may
    /// rely on (the library's `Consumer::last_events`, the dashboard), whatever its age. Absent
    /// from records stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_event: Option<Arc<LifecycleEvent>>,
}

impl Snapshot {
    /// The record of `name`, if the process is known.
    pub fn record(&self, name: &str) -> Option<ProcessRecord> {
        self.processes.get(name).map(|tracked| ProcessRecord {
            tracked: tracked.clone(),
            seq: self.seqs.get(name).copied().unwrap_or(0),
            last_event: self.last_events.get(name).cloned(),
        })
    }

    /// Rebuilds a snapshot from stored records.
    pub fn from_records(records: impl IntoIterator<Item = ProcessRecord>) -> Self {
        let records: Vec<_> = records
            .into_iter()
            .map(|record| (record.tracked.state.name.clone(), Some(record)))
            .collect();
        let mut snapshot = Self::default();
        snapshot.overlay(&records);
        snapshot
    }

    /// The records of `names` as they are now (`None`: the process is gone).
    pub fn records(
        &self,
        names: impl IntoIterator<Item = String>,
    ) -> Vec<(String, Option<ProcessRecord>)> {
        names
            .into_iter()
            .map(|name| {
                let record = self.record(&name);
                (name, record)
            })
            .collect()
    }

    /// Lays newer records over this snapshot, oldest first (`None`: the process is gone).
    pub fn overlay<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a (String, Option<ProcessRecord>)>,
    ) {
        for (name, record) in records {
            match record {
                Some(record) => {
                    self.seqs.insert(name.clone(), record.seq);
                    self.processes.insert(name.clone(), record.tracked.clone());
                    if let Some(event) = &record.last_event {
                        self.last_events.insert(name.clone(), event.clone());
                    }
                }
                None => {
                    self.processes.remove(name);
                    self.last_events.remove(name);
                    self.usage.remove(name);
                }
            }
        }
    }

    /// Names whose record differs between `self` and `next` (changed, new or gone).
    pub fn changed_names(&self, next: &Snapshot) -> Vec<String> {
        let mut names: Vec<String> = next
            .processes
            .iter()
            .filter(|(name, tracked)| {
                self.processes.get(*name) != Some(tracked)
                    || self.seqs.get(*name) != next.seqs.get(*name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        names.extend(
            self.processes
                .keys()
                .filter(|name| !next.processes.contains_key(*name))
                .cloned(),
        );
        names
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.processes.keys()
    }

    /// Whether no process is known (before the first observation, or when all disappeared).
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Processes that are unhealthy: their readiness probe fails after they were Ready in this
    /// run, or they were reported `never_ready`. A run that is still starting does not count.
    pub fn unhealthy(&self) -> usize {
        self.processes
            .values()
            .filter(|t| {
                t.state.is_ready == Readiness::NotReady
                    && (t.readiness.was_ready || t.readiness.never_ready_reported)
            })
            .count()
    }

    /// The last known states of the processes whose readiness grace has run out at `at`
    /// without an event saying so yet: a diff of each against itself at `at` reports it.
    pub fn readiness_overdue(
        &self,
        at: SystemTime,
        settings: &ProcessSettings,
    ) -> Vec<ProcessState> {
        self.processes
            .values()
            .filter(|t| {
                let grace = settings.readiness_grace_of(&t.state.name);
                t.readiness.overdue(&t.state, at, grace)
            })
            .map(|t| t.state.clone())
            .collect()
    }

    /// What is known of each process, for its gauges.
    pub fn views(&self) -> impl Iterator<Item = ProcessView<'_>> {
        self.processes.iter().map(|(name, t)| ProcessView {
            state: &t.state,
            usage: self.usage.get(name).copied(),
            under_pressure: t
                .conditions
                .pressure
                .iter()
                .filter(|(_, episode)| episode.active)
                .map(|(resource, _)| *resource)
                .collect(),
            given_up: t.given_up,
        })
    }

    /// The last known state of `name`.
    pub fn state_of(&self, name: &str) -> Option<&ProcessState> {
        self.processes.get(name).map(|t| &t.state)
    }
}

/// What pc-eventd knows about one process.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Tracked {
    pub(super) state: ProcessState,
    /// `Terminating` was seen during the current run.
    pub(super) stop_requested: bool,
    /// The run (by its `restarts` index, within the current incarnation) whose end was
    /// reported last, so that no run's end is reported twice or skipped.
    pub(super) reported_run: Option<u32>,
    /// When the last run ended after a stop request, to recognise a manual restart.
    pub(super) stopped_at: Option<SystemTime>,
    /// How often each (run, type, detail) key produced an event, so that a readiness flap
    /// inside one run gets a fresh id each time. Only the current run's keys are kept.
    pub(super) ordinals: BTreeMap<String, u32>,
    /// The current run's readiness so far. (Records stored before it existed load as a run
    /// that began when they are next observed.)
    #[serde(default)]
    pub(super) readiness: RunReadiness,
    /// Its resource and silence episodes.
    #[serde(default)]
    pub(super) conditions: ConditionState,
    /// The file watcher restarted it: the stop and the start that follow are its restart.
    #[serde(default)]
    pub(super) watch_restart: bool,
    /// `given_up` was reported and it has not run since.
    #[serde(default)]
    pub(super) given_up: bool,
    /// The start time of the incarnation the current one replaced: a late frame of it is stale.
    #[serde(default)]
    pub(super) replaced_incarnation: Option<String>,
}

/// What the current run has shown of its readiness: a run that has never been Ready is
/// *starting*, and its failed probes are not `unhealthy` until its grace runs out.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct RunReadiness {
    /// When the run began (or was first seen), the start of its grace.
    pub(super) began_at: Option<SystemTime>,
    /// It was Ready at some point in this run.
    pub(super) was_ready: bool,
    /// Its readiness probe failed at some point in this run.
    #[serde(default)]
    pub(super) failed: bool,
    /// `unhealthy` with reason `never_ready` went out for this run.
    pub(super) never_ready_reported: bool,
}

impl RunReadiness {
    pub(super) fn begin(at: SystemTime) -> Self {
        Self {
            began_at: Some(at),
            ..Self::default()
        }
    }

    /// Whether a run in `state` that has never been Ready has outlived its grace at `at`
    /// unreported. Only a run that waits for readiness (a probe, or a probe that failed) does.
    pub(super) fn overdue(&self, state: &ProcessState, at: SystemTime, grace: Duration) -> bool {
        let waits_for_readiness = state.has_ready_probe || state.is_ready == Readiness::NotReady;
        let waited = self.began_at.map_or(Duration::ZERO, |began| {
            at.duration_since(began).unwrap_or_default()
        });
        state.status.normalized().is_running()
            && state.is_ready != Readiness::Ready
            && waits_for_readiness
            && !self.was_ready
            && !self.never_ready_reported
            && waited >= grace
    }
}

impl Tracked {
    pub(super) fn new(state: ProcessState, at: SystemTime) -> Self {
        Self {
            state,
            stop_requested: false,
            reported_run: None,
            stopped_at: None,
            ordinals: BTreeMap::new(),
            readiness: RunReadiness::begin(at),
            conditions: ConditionState::default(),
            watch_restart: false,
            given_up: false,
            replaced_incarnation: None,
        }
    }

    pub(super) fn begin_run(&mut self, at: SystemTime) {
        self.stop_requested = false;
        self.readiness = RunReadiness::begin(at);
    }

    /// Whether the end of run `run` was reported already.
    pub(super) fn reported(&self, run: u32) -> bool {
        self.reported_run == Some(run)
    }
}
