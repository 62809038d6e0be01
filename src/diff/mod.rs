//! The diff engine: (what we knew, what process-compose says now) → lifecycle events.
//!
//! It is a pure function: no I/O and no clock (the observation time comes in through
//! [`DiffContext`]), so every rule below is unit-tested case by case from process-compose's
//! lifecycle (reference notes §5 and §8).
//!
//! Runs and incarnations: a process started by the project, a user or a manual restart is one
//! *incarnation*; policy restarts stay inside it and `restarts` numbers its *runs*. Event ids
//! are derived from (source, process, incarnation, run, event type, ordinal), never from the
//! clock, so observing the same change twice, from this daemon or from a restarted one, yields
//! the same id and JetStream drops the copy.

mod conditions;
mod rules;
mod settings;
mod snapshot;
#[cfg(test)]
mod tests;
mod transition;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pc_eventd_events::event::{
    EventState, EventType, LifecycleEvent, Reason, SubjectScheme, timestamp as format_timestamp,
};
use pc_eventd_events::process_compose::model::{ProcessState, ProcessStatus};
use rules::{RunLimits, run_of, step};
use snapshot::Tracked;
use transition::Transition;
use uuid::Uuid;

pub use conditions::{ConditionRules, Usage};
pub use settings::ProcessSettings;
pub(crate) use snapshot::ProcessRecord;
pub use snapshot::{ProcessView, Snapshot};

/// Namespace for the name-based (v5) UUIDs that serve as event ids.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5327_df34_583b_4c37_8cc6_16ea_b2a5_3ab7);

/// Where, when and how an observation was made.
#[derive(Debug, Clone)]
pub struct DiffContext<'a> {
    pub source: &'a str,
    pub subjects: &'a SubjectScheme,
    pub observed_at: SystemTime,
    /// The observation is a snapshot (a poll, or the state sent on a stream (re)connect), so
    /// its events are inferred by comparison rather than seen as they happened.
    pub synthetic: bool,
    /// How long after a change its observation may come: zero for a stream frame, up to the
    /// poll interval for a poll.
    pub lag: Duration,
    /// The observation carries fresh usage and output times (`GET /processes`, not a stream
    /// frame): the resource and silence conditions are read from it.
    pub sampled: bool,
    pub settings: &'a ProcessSettings,
}

/// Compares a new observation of every process against what was known and returns the new
/// knowledge together with the events that describe the change, in the order they happened.
///
/// Processes missing from `observed` have disappeared; an empty `prev` (a first start) announces
/// every process's current state, e.g. `started` for what is running.
pub fn diff(
    prev: &Snapshot,
    observed: &[ProcessState],
    ctx: &DiffContext<'_>,
) -> (Snapshot, Vec<LifecycleEvent>) {
    let mut next = Snapshot {
        processes: BTreeMap::new(),
        seqs: prev.seqs.clone(),
        last_events: BTreeMap::new(),
        usage: BTreeMap::new(),
    };
    let mut events = Vec::new();

    for now in observed {
        let before = prev.processes.get(&now.name);
        let (tracked, mut made) = observe(before, now, &mut next.seqs, ctx);
        let last = made.last().map(|event| Arc::new(event.clone()));
        if let Some(last) = last.or_else(|| prev.last_events.get(&now.name).cloned()) {
            next.last_events.insert(now.name.clone(), last);
        }
        events.append(&mut made);
        next.processes.insert(now.name.clone(), tracked);
        let usage = if ctx.sampled {
            Usage::measured(now)
        } else {
            prev.usage.get(&now.name).copied()
        };
        next.usage.extend(usage.map(|u| (now.name.clone(), u)));
    }

    for (name, gone) in &prev.processes {
        if next.processes.contains_key(name) {
            continue;
        }
        let status = gone.state.status.normalized();
        let pending_restart = status == ProcessStatus::Restarting;
        if status.is_active() && !pending_restart && !gone.reported(gone.state.restarts) {
            let mut gone = gone.clone();
            let transition =
                Transition::new(EventType::Stopped, run_of(&gone.state)).reason(Reason::Removed);
            let previous_status = Some(gone.state.status.to_string());
            events.push(make_event(
                &mut gone,
                &mut next.seqs,
                transition,
                previous_status,
                ctx,
            ));
        }
    }

    (next, events)
}

/// What one observed process changes in a [`Snapshot`]; see [`Snapshot::apply`].
#[derive(Debug, Clone)]
pub struct ProcessUpdate {
    tracked: Tracked,
    seq: Option<u64>,
    last_event: Option<Arc<LifecycleEvent>>,
}

impl Snapshot {
    /// Records what [`diff_one`] observed, once its events are published.
    pub fn apply(&mut self, update: ProcessUpdate) {
        let name = update.tracked.state.name.clone();
        if let Some(seq) = update.seq {
            self.seqs.insert(name.clone(), seq);
        }
        if let Some(event) = update.last_event {
            self.last_events.insert(name.clone(), event);
        }
        self.processes.insert(name, update.tracked);
    }
}

/// Like [`diff`] for one process only (a stream frame): the other processes are untouched.
pub fn diff_one(
    prev: &Snapshot,
    now: &ProcessState,
    ctx: &DiffContext<'_>,
) -> (ProcessUpdate, Vec<LifecycleEvent>) {
    let mut seqs: BTreeMap<String, u64> = prev
        .seqs
        .get_key_value(&now.name)
        .map(|(k, v)| (k.clone(), *v))
        .into_iter()
        .collect();
    let (tracked, events) = observe(prev.processes.get(&now.name), now, &mut seqs, ctx);
    let seq = seqs.get(&now.name).copied();
    let last_event = events.last().map(|event| Arc::new(event.clone()));
    let update = ProcessUpdate {
        tracked,
        seq,
        last_event,
    };
    (update, events)
}

/// Applies the lifecycle rules to one process and turns the transitions into events.
fn observe(
    before: Option<&Tracked>,
    now: &ProcessState,
    seqs: &mut BTreeMap<String, u64>,
    ctx: &DiffContext<'_>,
) -> (Tracked, Vec<LifecycleEvent>) {
    let settings = ctx.settings;
    let limits = RunLimits {
        readiness_grace: settings.readiness_grace_of(&now.name),
        // Both ends of the pause may be observed late.
        manual_restart_window: settings.manual_restart_window(&now.name) + ctx.lag,
        gives_up: settings.gives_up(&now.name, now.restarts),
    };
    let (mut tracked, mut transitions) = step(before, now, ctx.observed_at, &limits);
    if ctx.sampled {
        let silence_after = settings.silence_threshold(now.primary_namespace(), &now.name);
        transitions.extend(conditions::sample(
            &mut tracked.conditions,
            tracked.readiness.began_at,
            now,
            ctx.observed_at,
            &settings.conditions,
            silence_after,
            &run_of(now),
        ));
    }
    let previous_status = before.map(|t| t.state.status.to_string());
    let events = transitions
        .into_iter()
        .map(|transition| make_event(&mut tracked, seqs, transition, previous_status.clone(), ctx))
        .collect();
    prune_ordinals(&mut tracked);
    (tracked, events)
}

/// Turns one transition into an event: its id, subject and sequence number.
fn make_event(
    tracked: &mut Tracked,
    seqs: &mut BTreeMap<String, u64>,
    transition: Transition,
    previous_status: Option<String>,
    ctx: &DiffContext<'_>,
) -> LifecycleEvent {
    let state = &tracked.state;
    let namespace = state.primary_namespace().to_owned();
    let detail = match (transition.event_type, &transition.pressure) {
        (EventType::StatusChanged, _) => state.status.as_str(),
        (_, Some(pressure)) => pressure.resource.as_str(),
        _ => "",
    };
    let (incarnation, run) = &transition.run;
    let key = format!(
        "{namespace}\u{1f}{}\u{1f}{incarnation}\u{1f}{run}\u{1f}{}\u{1f}{detail}",
        state.name, transition.event_type
    );
    let ordinal = tracked.ordinals.entry(key.clone()).or_insert(0);
    let id_input = format!("{}\u{1f}{key}\u{1f}{ordinal}", ctx.source);
    *ordinal += 1;

    let seq = seqs.entry(state.name.clone()).or_insert(0);
    *seq += 1;

    LifecycleEvent {
        id: Uuid::new_v5(&EVENT_ID_NAMESPACE, id_input.as_bytes()).to_string(),
        event_type: transition.event_type,
        process: state.name.clone(),
        subject: ctx
            .subjects
            .subject(ctx.source, &namespace, &state.name, transition.event_type),
        namespace,
        timestamp: format_timestamp(ctx.observed_at),
        severity: transition.event_type.severity(),
        seq: *seq,
        source: ctx.source.to_owned(),
        previous_status,
        exit_code: transition.exit_code,
        restarts: transition.restarts,
        restarts_delta: transition.restarts_delta,
        reason: transition.reason,
        synthetic: ctx.synthetic,
        output: None,
        given_up: transition.given_up,
        pressure: transition.pressure,
        silence: transition.silence,
        state: event_state(state),
    }
}

/// Forgets ordinals of runs that are over, so memory stays bounded by the current run.
fn prune_ordinals(tracked: &mut Tracked) {
    let (incarnation, run) = run_of(&tracked.state);
    let current = format!("\u{1f}{incarnation}\u{1f}{run}\u{1f}");
    tracked.ordinals.retain(|key, _| key.contains(&current));
}

/// The process's state as events carry it.
fn event_state(p: &ProcessState) -> EventState {
    EventState {
        name: p.name.clone(),
        namespace: p.primary_namespace().to_owned(),
        namespaces: p.namespace.all().to_vec(),
        status: p.status.to_string(),
        is_ready: p.is_ready.as_str().to_owned(),
        has_ready_probe: p.has_ready_probe,
        restarts: p.restarts,
        exit_code: p.exit_code,
        // Derived from `status`: process-compose refreshes its own flag only when polled.
        is_running: p.status.normalized().is_running(),
        pid: p.pid,
    }
}
