//! The lifecycle rules: from one observation of a process to the next, what ended and what
//! began, as transitions that become events.

use std::time::{Duration, SystemTime};

use pc_eventd_events::event::{EventType, GivenUp, GivenUpPolicy, Reason};
use pc_eventd_events::process_compose::model::{ProcessState, ProcessStatus, Readiness};

use super::snapshot::Tracked;
use super::transition::Transition;

/// The process's settings that the rules need.
pub(super) struct RunLimits {
    pub(super) readiness_grace: Duration,
    /// A stop followed by a new incarnation within this long is a manual restart.
    pub(super) manual_restart_window: Duration,
    /// The policy that would give up after a failed run now, with its limit; `None` when the
    /// policy would restart it.
    pub(super) gives_up: Option<(GivenUpPolicy, Option<u32>)>,
}

/// The lifecycle rules for one process: first what ended between the two observations, then
/// what began.
pub(super) fn step(
    before: Option<&Tracked>,
    now: &ProcessState,
    at: SystemTime,
    limits: &RunLimits,
) -> (Tracked, Vec<Transition>) {
    if let Some(before) = before
        && is_stale(before, now)
    {
        return (before.clone(), Vec::new());
    }
    let mut tracked = track(before, now, at);
    tracked.readiness.began_at.get_or_insert(at);
    let change = Change::new(before, now, at);
    let mut out = change.incarnation_replaced(&mut tracked);
    out.extend(change.run_between_polls());
    out.extend(change.restarted_after_stop(limits.manual_restart_window));
    // Whether the current run was asked to stop: a new incarnation's run was not, whatever the
    // old one was.
    let stop_requested = tracked.stop_requested;
    out.extend(change.policy_restarts(&mut tracked, stop_requested));
    out.extend(change.restarting(&mut tracked, stop_requested));
    let end = change.ended(&mut tracked, stop_requested);
    let gave_up = end.as_ref().and_then(|end| given_up(end, now, limits));
    out.extend(end.into_iter().chain(gave_up));
    if change.new_status == ProcessStatus::Terminating {
        tracked.stop_requested = true;
    }
    out.extend(change.began(&mut tracked));
    out.extend(change.status_changed());
    out.extend(readiness(
        &mut tracked,
        change.readiness_changed(),
        at,
        limits.readiness_grace,
        change.current_run.clone(),
    ));
    if tracked.watch_restart || change.watch_triggered() {
        out = file_watcher_restart(&mut tracked, out);
    }
    note_given_up(&mut tracked, now, &out);
    (tracked, out)
}

/// Whether process-compose has given up on it: from its `given_up` until it runs again.
fn note_given_up(tracked: &mut Tracked, now: &ProcessState, out: &[Transition]) {
    if now.status.normalized().is_running() {
        tracked.given_up = false;
    }
    tracked.given_up |= out.iter().any(|t| t.event_type == EventType::GivenUp);
}

/// What is kept of `now`, over what was known `before`: the state without its usage, and the
/// watcher's trigger that stream frames leave out (the last one a poll showed still holds).
fn track(before: Option<&Tracked>, now: &ProcessState, at: SystemTime) -> Tracked {
    let mut kept = now.without_usage();
    if kept.watch_trigger_time.is_none() {
        kept.watch_trigger_time = before.and_then(|t| t.state.watch_trigger_time.clone());
    }
    match before {
        Some(t) => Tracked {
            state: kept,
            ..t.clone()
        },
        None => Tracked::new(kept, at),
    }
}

/// The transitions of a restart by the file watcher, marked as such; the mark holds from the
/// trigger until the run that the watcher started begins.
fn file_watcher_restart(tracked: &mut Tracked, out: Vec<Transition>) -> Vec<Transition> {
    let out: Vec<Transition> = out.into_iter().filter_map(by_file_watcher).collect();
    tracked.watch_restart = !out
        .iter()
        .any(|t| matches!(t.event_type, EventType::Restarted | EventType::Started));
    out
}

/// A run that ended with a failure and will not be restarted: who gave up, and the count.
fn given_up(end: &Transition, now: &ProcessState, limits: &RunLimits) -> Option<Transition> {
    let (policy, max_restarts) = limits.gives_up?;
    (end.event_type == EventType::Crashed && end.reason == Some(Reason::ExitedWithFailure)).then(
        || {
            Transition::new(EventType::GivenUp, end.run.clone()).given_up(GivenUp {
                policy,
                restarts: now.restarts,
                max_restarts,
            })
        },
    )
}

/// A transition as the file watcher's restart makes it: its stop and its restart carry the
/// reason `file_watch`; the signal that stopped the old run is not a crash, and nothing gave
/// up.
fn by_file_watcher(mut t: Transition) -> Option<Transition> {
    match (t.event_type, t.reason) {
        (EventType::GivenUp, _) => return None,
        (EventType::Crashed, Some(Reason::ExitedWithFailure)) => {
            t.event_type = EventType::Stopped;
            t.reason = Some(Reason::FileWatch);
        }
        (EventType::Stopped, Some(Reason::StopRequested | Reason::ManualRestart))
        | (EventType::Restarted, Some(Reason::ManualRestart)) => t.reason = Some(Reason::FileWatch),
        _ => {}
    }
    Some(t)
}

/// One process from its previous observation to this one: what the rules ask of the change.
pub(super) struct Change<'a> {
    pub(super) before: Option<&'a Tracked>,
    pub(super) old_state: Option<&'a ProcessState>,
    pub(super) now: &'a ProcessState,
    pub(super) at: SystemTime,
    /// A process seen for the first time is read as coming from `Pending`.
    pub(super) old_status: ProcessStatus,
    pub(super) new_status: ProcessStatus,
    pub(super) current_run: (String, u32),
    pub(super) new_incarnation: bool,
    /// How many policy restarts happened in between.
    pub(super) restarts_rose: u32,
    /// A new incarnation or a policy restart: the run observed now is not the one before.
    pub(super) run_changed: bool,
}

impl<'a> Change<'a> {
    pub(super) fn new(before: Option<&'a Tracked>, now: &'a ProcessState, at: SystemTime) -> Self {
        let old_state = before.map(|t| &t.state);
        let old_status = old_state.map_or(ProcessStatus::Pending, |s| s.status.normalized());
        let new_status = now.status.normalized();
        // Nothing restarts a run that ended for good: whatever runs next is a new incarnation,
        // even when the frame that shows it carries no start time or pid yet.
        // Leaving `Restarting` is the policy's restart, inside the incarnation, whatever the pid.
        let new_incarnation = (old_status != ProcessStatus::Restarting
            && old_state.is_some_and(|old| is_new_incarnation(old, now)))
            || (old_status.is_ended() && new_status.is_running());
        let restarts_rose = old_state.map_or(0, |old| now.restarts.saturating_sub(old.restarts));
        Self {
            before,
            old_state,
            now,
            at,
            old_status,
            new_status,
            current_run: run_of(now),
            new_incarnation,
            restarts_rose,
            run_changed: new_incarnation || restarts_rose > 0,
        }
    }

    /// The file watcher's trigger time moved since the last observation that showed one.
    pub(super) fn watch_triggered(&self) -> bool {
        let (Some(old), Some(new)) = (self.old_state, &self.now.watch_trigger_time) else {
            return false;
        };
        old.watch_trigger_time.as_ref() != Some(new)
    }

    pub(super) fn manual_restart(&self) -> Transition {
        Transition::new(EventType::Restarted, self.current_run.clone()).restart(
            self.now.restarts,
            0,
            Reason::ManualRestart,
        )
    }

    /// A manual restart (or a stop and a start between two polls): the old incarnation is
    /// gone.
    pub(super) fn incarnation_replaced(&self, tracked: &mut Tracked) -> Vec<Transition> {
        let mut out = Vec::new();
        let (true, Some(before)) = (self.new_incarnation, self.before) else {
            return out;
        };
        if self.old_status.is_active() {
            let old_run = before.state.restarts;
            // (Leaving `Restarting` is never a new incarnation: nothing was running then.)
            if !before.reported(old_run) {
                // (`Terminating`, once seen, is a stop request until the next run begins.)
                let reason = if before.stop_requested {
                    Reason::StopRequested
                } else {
                    Reason::ManualRestart
                };
                out.push(Transition::new(EventType::Stopped, run_of(&before.state)).reason(reason));
            }
            out.push(self.manual_restart());
        }
        tracked.begin_run(self.at);
        tracked.reported_run = None;
        tracked.replaced_incarnation = before.state.process_start_time.clone();
        out
    }

    /// A run that started and ended between two polls: its start, announced before its end.
    pub(super) fn run_between_polls(&self) -> Option<Transition> {
        let now = self.now;
        let evidence_of_a_run = self.restarts_rose > 0
            || self.new_status == ProcessStatus::Restarting
            || (self.new_status == ProcessStatus::Completed
                && (self.new_incarnation || !self.old_status.is_ended())
                && (now.pid > 0 || now.process_start_time.is_some()));
        let old = self.old_state?;
        let unseen = !self.old_status.is_active() && !self.new_status.is_running();
        (unseen && evidence_of_a_run).then(|| {
            let first_run = (self.current_run.0.clone(), old.restarts);
            Transition::new(EventType::Started, first_run)
        })
    }

    /// A stop seen to its end, then a new incarnation soon after: a manual restart whose gap
    /// was observed (a stream sees every step; a poll sometimes does). process-compose shows a
    /// restart exactly as a stop and a start; only the pause between them tells them apart,
    /// and a start after a longer one is the operator's.
    pub(super) fn restarted_after_stop(&self, window: Duration) -> Option<Transition> {
        let soon = self
            .before
            .and_then(|b| b.stopped_at)
            .is_some_and(|stopped| self.at.duration_since(stopped).unwrap_or_default() <= window);
        (self.new_incarnation && self.new_status.is_running() && self.old_status.is_ended() && soon)
            .then(|| self.manual_restart())
    }

    /// The restart policy restarted it, perhaps several times between two polls. Over REST the
    /// count rises as the status becomes `Restarting`; in stream frames only with the next
    /// `Running`. Either way the run that ended last is `restarts - 1`, and only its exit code
    /// survives: runs merged by a poll are reported as one.
    pub(super) fn policy_restarts(
        &self,
        tracked: &mut Tracked,
        stop_requested: bool,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        if self.restarts_rose == 0 {
            return out;
        }
        let now = self.now;
        let ended = now.restarts - 1;
        if !tracked.reported(ended) {
            let ended_run = (self.current_run.0.clone(), ended);
            out.extend(never_ready_at_end(tracked, self.before, ended_run.clone()));
            out.extend(end_of_restarted_run(stop_requested, now, ended_run));
            tracked.reported_run = Some(ended);
        }
        out.push(
            Transition::new(EventType::Restarted, self.current_run.clone()).restart(
                now.restarts,
                self.restarts_rose,
                Reason::RestartPolicy,
            ),
        );
        tracked.begin_run(self.at);
        out
    }

    /// `Restarting` with the count not yet risen (a stream frame): the current run just ended.
    pub(super) fn restarting(
        &self,
        tracked: &mut Tracked,
        stop_requested: bool,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        if self.new_status == ProcessStatus::Restarting
            && self.restarts_rose == 0
            && self.old_status != ProcessStatus::Restarting
            && !tracked.reported(self.now.restarts)
        {
            let run = self.current_run.clone();
            out.extend(never_ready_at_end(tracked, self.before, run.clone()));
            out.extend(end_of_restarted_run(stop_requested, self.now, run));
            tracked.reported_run = Some(self.now.restarts);
        }
        out
    }

    /// The run ended for good.
    pub(super) fn ended(&self, tracked: &mut Tracked, stop_requested: bool) -> Option<Transition> {
        let now = self.now;
        if !self.new_status.is_ended()
            || (self.old_status.is_ended() && !self.run_changed)
            || tracked.reported(now.restarts)
        {
            return None;
        }
        tracked.reported_run = Some(now.restarts);
        let (event_type, reason) = match self.new_status {
            ProcessStatus::Skipped => return None,
            ProcessStatus::Error => (EventType::Crashed, Reason::ErrorStatus),
            _ if stop_requested => (EventType::Stopped, Reason::StopRequested),
            _ if now.is_success(now.exit_code) => (EventType::Stopped, Reason::ExitedSuccessfully),
            _ => (EventType::Crashed, Reason::ExitedWithFailure),
        };
        if reason == Reason::StopRequested {
            tracked.stopped_at = Some(self.at);
        }
        Some(Transition::new(event_type, self.current_run.clone()).exit(now.exit_code, reason))
    }

    /// A run begins when it enters a running status. Leaving `Restarting` is the policy's
    /// restart, already reported: it is not a start.
    pub(super) fn began(&self, tracked: &mut Tracked) -> Option<Transition> {
        let (old, new) = (&self.old_status, &self.new_status);
        if new.is_running() && !old.is_running() && !self.run_changed {
            tracked.begin_run(self.at);
        }
        let from_stopped = !old.is_running() && *old != ProcessStatus::Restarting;
        (new.is_running() && (self.new_incarnation || from_stopped))
            .then(|| Transition::new(EventType::Started, self.current_run.clone()))
    }

    pub(super) fn status_changed(&self) -> Option<Transition> {
        (self.before.is_none() || self.new_status != self.old_status)
            .then(|| Transition::new(EventType::StatusChanged, self.current_run.clone()))
    }

    pub(super) fn readiness_changed(&self) -> bool {
        let old_ready = self.old_state.map_or(Readiness::Unknown, |s| s.is_ready);
        self.now.is_ready != old_ready || self.run_changed
    }
}

/// Readiness within a run: `healthy` when it becomes Ready (or a new run already is); when it
/// fails after that, `unhealthy` (`readiness_lost`). A run that has never been Ready is starting:
/// its failed probes are quiet until its grace runs out, then one `unhealthy` (`never_ready`).
/// A reset to `-` (restart, stop) is neither healthy nor unhealthy.
pub(super) fn readiness(
    tracked: &mut Tracked,
    changed: bool,
    at: SystemTime,
    grace: Duration,
    run: (String, u32),
) -> Option<Transition> {
    let now = &tracked.state;
    tracked.readiness.failed |= now.is_ready == Readiness::NotReady;
    match now.is_ready {
        Readiness::Ready => {
            tracked.readiness.was_ready = true;
            changed.then(|| Transition::new(EventType::Healthy, run))
        }
        Readiness::NotReady if changed && tracked.readiness.was_ready => {
            Some(Transition::new(EventType::Unhealthy, run).reason(Reason::ReadinessLost))
        }
        _ if tracked.readiness.overdue(now, at, grace) => {
            tracked.readiness.never_ready_reported = true;
            Some(Transition::new(EventType::Unhealthy, run).reason(Reason::NeverReady))
        }
        _ => None,
    }
}

/// A run that failed its readiness probe and never was Ready, ended by process-compose and
/// restarted by its policy (what it does at the probe's failure threshold, usually before the
/// grace runs out): that run was never ready, and says so before its end. (The frames that end
/// it have readiness `-` again: what counts is what the run showed before.)
pub(super) fn never_ready_at_end(
    tracked: &mut Tracked,
    before: Option<&Tracked>,
    ended_run: (String, u32),
) -> Option<Transition> {
    let run = &before?.readiness;
    if !run.failed || run.was_ready || run.never_ready_reported {
        return None;
    }
    tracked.readiness.never_ready_reported = true;
    Some(Transition::new(EventType::Unhealthy, ended_run).reason(Reason::NeverReady))
}

/// How a run that the policy restarts ended: `stopped` after a stop request (a readiness
/// failure, say), `crashed` on a failure code, nothing for a clean exit under `restart: always`.
pub(super) fn end_of_restarted_run(
    stop_requested: bool,
    now: &ProcessState,
    run: (String, u32),
) -> Option<Transition> {
    if stop_requested {
        Some(Transition::new(EventType::Stopped, run).exit(now.exit_code, Reason::StopRequested))
    } else if !now.is_success(now.exit_code) {
        Some(
            Transition::new(EventType::Crashed, run).exit(now.exit_code, Reason::ExitedWithFailure),
        )
    } else {
        None
    }
}

/// A frame about the incarnation that was replaced, arriving after its successor's: the file
/// watcher's restart launches the new run without waiting, and the old run's end is published
/// after the new run's start. What it says is over.
fn is_stale(before: &Tracked, now: &ProcessState) -> bool {
    now.process_start_time.is_some()
        && now.process_start_time == before.replaced_incarnation
        && now.process_start_time != before.state.process_start_time
}

/// A different incarnation: the start time changed, or (servers before v1.110.0, which send no
/// start time) the pid changed while the restart count did not. A pid of 0 is "not known yet".
pub(super) fn is_new_incarnation(old: &ProcessState, now: &ProcessState) -> bool {
    match (&old.process_start_time, &now.process_start_time) {
        (Some(a), Some(b)) => a != b,
        _ => old.pid > 0 && now.pid > 0 && old.pid != now.pid && old.restarts == now.restarts,
    }
}

/// The run `state` belongs to: (incarnation, restarts).
pub(super) fn run_of(state: &ProcessState) -> (String, u32) {
    (state.incarnation(), state.restarts)
}
