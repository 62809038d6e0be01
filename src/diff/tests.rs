use pc_eventd_events::process_compose::model::{Namespaces, ProcessInfo, Readiness};

use super::*;

const T0: &str = "2026-08-20T14:02:08.420771944+03:00";
const T1: &str = "2026-08-20T14:05:00.000000000+03:00";
/// The readiness grace of the harness.
const GRACE: Duration = Duration::from_secs(30);

fn ps(name: &str, status: ProcessStatus) -> ProcessState {
    ProcessState {
        name: name.into(),
        status,
        pid: 100,
        process_start_time: Some(T0.into()),
        ..ProcessState::default()
    }
}

fn with(mut p: ProcessState, f: impl FnOnce(&mut ProcessState)) -> ProcessState {
    f(&mut p);
    p
}

/// Feeds observations one after another, returning the events of each step.
struct Harness {
    snapshot: Snapshot,
    scheme: SubjectScheme,
    /// Each observation is one second after the previous one.
    clock: SystemTime,
    settings: ProcessSettings,
    /// Observations are snapshots (polls) rather than stream frames.
    synthetic: bool,
    /// How late an observation may be.
    lag: Duration,
}

impl Harness {
    fn new() -> Self {
        Self {
            snapshot: Snapshot::default(),
            scheme: SubjectScheme::default(),
            clock: std::time::UNIX_EPOCH,
            settings: ProcessSettings::fixed(GRACE),
            synthetic: false,
            lag: Duration::ZERO,
        }
    }

    /// The context of one stream frame observed now.
    fn frame_context(&self) -> DiffContext<'_> {
        DiffContext {
            source: "test",
            subjects: &self.scheme,
            observed_at: self.clock,
            synthetic: false,
            lag: Duration::ZERO,
            sampled: false,
            settings: &self.settings,
        }
    }

    fn observe(&mut self, observed: &[ProcessState]) -> Vec<LifecycleEvent> {
        let ctx = DiffContext {
            source: "test",
            subjects: &self.scheme,
            observed_at: self.clock,
            synthetic: self.synthetic,
            lag: self.lag,
            sampled: self.synthetic,
            settings: &self.settings,
        };
        self.clock += Duration::from_secs(1);
        let (next, events) = diff(&self.snapshot, observed, &ctx);
        self.snapshot = next;
        events
    }

    /// The non-debug event types of one step, in order.
    fn lifecycle(&mut self, observed: &[ProcessState]) -> Vec<EventType> {
        types(&self.observe(observed))
    }
}

fn types(events: &[LifecycleEvent]) -> Vec<EventType> {
    events
        .iter()
        .map(|e| e.event_type)
        .filter(|t| *t != EventType::StatusChanged)
        .collect()
}

fn find(events: &[LifecycleEvent], t: EventType) -> &LifecycleEvent {
    events
        .iter()
        .find(|e| e.event_type == t)
        .unwrap_or_else(|| panic!("no {t} event in {events:#?}"))
}

use EventType::*;
use ProcessStatus as S;

#[test]
fn first_start_announces_running_processes() {
    let mut h = Harness::new();
    let events = h.observe(&[
        ps("web", S::Running),
        ps("docs", S::Disabled),
        ps("later", S::Pending),
    ]);
    let web: Vec<_> = events.iter().filter(|e| e.process == "web").collect();
    assert_eq!(
        web.iter().map(|e| e.event_type).collect::<Vec<_>>(),
        [Started, StatusChanged]
    );
    assert_eq!(web[0].previous_status, None);
    assert_eq!(web[0].subject, "core.process.default.web.started");
    // a disabled or pending process is announced as a status, never as started
    assert!(
        events
            .iter()
            .filter(|e| e.process != "web")
            .all(|e| e.event_type == StatusChanged)
    );
}

#[test]
fn pending_to_running_is_started() {
    let mut h = Harness::new();
    h.observe(&[ps("web", S::Pending)]);
    let events = h.observe(&[ps("web", S::Running)]);
    assert_eq!(types(&events), [Started]);
    let changed = find(&events, StatusChanged);
    assert_eq!(changed.previous_status.as_deref(), Some("Pending"));
    assert_eq!(changed.severity, pc_eventd_events::event::Severity::Debug);
}

#[test]
fn stop_with_terminating_seen_is_stopped_whatever_the_exit_code() {
    let mut h = Harness::new();
    h.observe(&[ps("web", S::Running)]);
    assert_eq!(h.lifecycle(&[ps("web", S::Terminating)]), []);
    let events = h.observe(&[with(ps("web", S::Completed), |p| p.exit_code = -1)]);
    assert_eq!(types(&events), [Stopped]);
    let stopped = find(&events, Stopped);
    assert_eq!(stopped.exit_code, Some(-1));
    assert_eq!(stopped.reason, Some(Reason::StopRequested));
    assert_eq!(stopped.previous_status.as_deref(), Some("Terminating"));
}

#[test]
fn clean_exit_is_stopped() {
    let mut h = Harness::new();
    h.observe(&[ps("job", S::Running)]);
    let events = h.observe(&[ps("job", S::Completed)]);
    assert_eq!(types(&events), [Stopped]);
    assert_eq!(
        find(&events, Stopped).reason,
        Some(Reason::ExitedSuccessfully)
    );
}

#[test]
fn failed_exit_is_crashed_with_its_code() {
    let mut h = Harness::new();
    h.observe(&[ps("job", S::Running)]);
    let events = h.observe(&[with(ps("job", S::Completed), |p| p.exit_code = 3)]);
    assert_eq!(types(&events), [Crashed]);
    let crashed = find(&events, Crashed);
    assert_eq!(crashed.exit_code, Some(3));
    assert_eq!(crashed.severity, pc_eventd_events::event::Severity::Error);
    assert_eq!(crashed.state.status, "Completed");
    assert!(!crashed.state.is_running);
}

#[test]
fn a_kill_without_terminating_is_a_crash() {
    // What a poller sees of an OOM kill, and also of a stop whose Terminating it missed:
    // exit -1 without a stop request counts as a failure.
    let mut h = Harness::new();
    h.observe(&[ps("web", S::Running)]);
    let events = h.observe(&[with(ps("web", S::Completed), |p| p.exit_code = -1)]);
    assert_eq!(types(&events), [Crashed]);
}

#[test]
fn success_exit_codes_count_as_success() {
    let mut h = Harness::new();
    let job = |status| with(ps("job", status), |p| p.success_exit_codes = vec![3]);
    h.observe(&[job(S::Running)]);
    let events = h.observe(&[with(job(S::Completed), |p| p.exit_code = 3)]);
    assert_eq!(types(&events), [Stopped]);
}

#[test]
fn error_status_is_a_crash_and_skipped_is_only_a_status() {
    let mut h = Harness::new();
    h.observe(&[ps("a", S::Pending), ps("b", S::Pending)]);
    let events = h.observe(&[
        ps("a", S::Error),
        with(ps("b", S::Skipped), |p| p.exit_code = 1),
    ]);
    assert_eq!(types(&events), [Crashed]);
    assert_eq!(find(&events, Crashed).reason, Some(Reason::ErrorStatus));
    assert_eq!(find(&events, Crashed).process, "a");
    assert!(
        events
            .iter()
            .any(|e| e.process == "b" && e.event_type == StatusChanged)
    );
}

#[test]
fn a_crash_seen_at_first_sight_is_reported() {
    let mut h = Harness::new();
    let events = h.observe(&[with(ps("job", S::Completed), |p| p.exit_code = 3)]);
    assert_eq!(types(&events), [Crashed]);
}

#[test]
fn policy_restart_seen_step_by_step() {
    let mut h = Harness::new();
    h.observe(&[ps("w", S::Running)]);
    // the Restarting frame carries the new exit code and the old restart count
    let events = h.observe(&[with(ps("w", S::Restarting), |p| p.exit_code = 2)]);
    assert_eq!(types(&events), [Crashed]);
    assert_eq!(find(&events, Crashed).exit_code, Some(2));
    let events = h.observe(&[with(ps("w", S::Running), |p| {
        p.exit_code = 2;
        p.restarts = 1;
    })]);
    assert_eq!(types(&events), [Restarted]);
    let restarted = find(&events, Restarted);
    assert_eq!(
        (restarted.restarts, restarted.restarts_delta),
        (Some(1), Some(1))
    );
    assert_eq!(restarted.reason, Some(Reason::RestartPolicy));
}

#[test]
fn policy_restart_as_rest_reports_it() {
    // Over REST the count rises as the status becomes Restarting.
    let mut h = Harness::new();
    let w = |status, restarts| {
        with(ps("w", status), |p| {
            p.exit_code = 2;
            p.restarts = restarts;
        })
    };
    h.observe(&[ps("w", S::Running)]);
    let events = h.observe(&[w(S::Restarting, 1)]);
    assert_eq!(types(&events), [Crashed, Restarted]);
    assert_eq!(find(&events, Restarted).restarts, Some(1));
    assert_eq!(h.lifecycle(&[w(S::Running, 1)]), []);
    // the next run's crash is reported again
    assert_eq!(h.lifecycle(&[w(S::Restarting, 2)]), [Crashed, Restarted]);
    assert_eq!(h.lifecycle(&[w(S::Running, 2)]), []);
    assert_eq!(h.lifecycle(&[w(S::Completed, 2)]), [Crashed]);
}

#[test]
fn policy_restart_without_start_times_is_not_a_manual_one() {
    // Servers before v1.110.0: no start time, and the pid changes with every run.
    let mut h = Harness::new();
    let w = |status, restarts, pid| {
        with(ps("w", status), |p| {
            p.process_start_time = None;
            p.exit_code = 2;
            p.restarts = restarts;
            p.pid = pid;
        })
    };
    h.observe(&[w(S::Running, 0, 100)]);
    assert_eq!(
        h.lifecycle(&[w(S::Restarting, 1, 100)]),
        [Crashed, Restarted]
    );
    assert_eq!(h.lifecycle(&[w(S::Running, 1, 200)]), []);
}

#[test]
fn a_crash_loop_polled_during_backoffs_reports_every_seen_crash() {
    // A 2 s poller of a fast crash loop mostly lands in `Restarting`.
    let mut h = Harness::new();
    let w = |status, restarts| {
        with(ps("w", status), |p| {
            p.exit_code = 3;
            p.restarts = restarts;
        })
    };
    h.observe(&[w(S::Running, 0)]);
    assert_eq!(h.lifecycle(&[w(S::Restarting, 1)]), [Crashed, Restarted]);
    let events = h.observe(&[w(S::Restarting, 3)]);
    assert_eq!(types(&events), [Crashed, Restarted]);
    assert_eq!(find(&events, Restarted).restarts_delta, Some(2));
    // the last run, never seen running, ends for good
    assert_eq!(h.lifecycle(&[w(S::Completed, 3)]), [Crashed]);
    assert_eq!(h.lifecycle(&[w(S::Completed, 3)]), []);
}

#[test]
fn a_run_seen_only_after_it_ended_is_announced() {
    let mut h = Harness::new();
    h.observe(&[with(ps("job", S::Pending), |p| {
        p.pid = 0;
        p.process_start_time = None;
    })]);
    let events = h.observe(&[with(ps("job", S::Completed), |p| p.exit_code = 3)]);
    assert_eq!(types(&events), [Started, Crashed]);

    let mut h = Harness::new();
    h.observe(&[with(ps("svc", S::Disabled), |p| p.pid = 0)]);
    let events = h.observe(&[with(ps("svc", S::Restarting), |p| {
        p.exit_code = 3;
        p.restarts = 1;
    })]);
    assert_eq!(types(&events), [Started, Crashed, Restarted]);
}

#[test]
fn a_whole_new_run_between_two_polls_of_an_ended_process_is_announced() {
    // Ended, then ended again in a new incarnation (started and failed between two polls).
    let mut h = Harness::new();
    h.observe(&[ps("job", S::Running)]);
    h.observe(&[with(ps("job", S::Completed), |p| p.exit_code = 0)]);
    let events = h.observe(&[with(ps("job", S::Completed), |p| {
        p.pid = 200;
        p.process_start_time = Some(T1.into());
        p.exit_code = 3;
    })]);
    assert_eq!(types(&events), [Started, Crashed], "{events:#?}");
}

#[test]
fn a_run_whose_end_was_reported_while_restarting_ends_once() {
    // The stream's `Restarting` frame reported the crash; the policy then gives up and the
    // same run is `Completed`: no second end.
    let mut h = Harness::new();
    h.observe(&[ps("w", S::Running)]);
    let restarting = h.observe(&[with(ps("w", S::Restarting), |p| p.exit_code = 4)]);
    assert_eq!(types(&restarting), [Crashed]);
    let completed = h.observe(&[with(ps("w", S::Completed), |p| p.exit_code = 4)]);
    assert_eq!(types(&completed), [], "{completed:#?}");
}

#[test]
fn policy_restarts_seen_only_once_they_stop_are_announced_as_started() {
    // A poll missed a whole crash loop and finds it being stopped: it ran all along.
    let mut h = Harness::new();
    h.observe(&[with(ps("w", S::Pending), |p| p.pid = 0)]);
    let events = h.observe(&[with(ps("w", S::Terminating), |p| {
        p.exit_code = 3;
        p.restarts = 2;
    })]);
    assert_eq!(types(&events)[0], Started, "{events:#?}");
}

#[test]
fn a_new_incarnation_that_crashed_after_a_stop_is_a_crash() {
    // A poll saw the stop begin, then a new incarnation (a manual restart) that has already
    // failed: the stop was the old run's, the failure the new one's.
    let mut h = Harness::new();
    h.observe(&[ps("api", S::Running)]);
    h.observe(&[ps("api", S::Terminating)]);
    let events = h.observe(&[with(ps("api", S::Completed), |p| {
        p.pid = 200;
        p.process_start_time = Some(T1.into());
        p.exit_code = 3;
    })]);
    assert_eq!(types(&events), [Stopped, Restarted, Crashed]);
    assert_eq!(find(&events, Stopped).reason, Some(Reason::StopRequested));
    assert_eq!(
        find(&events, Crashed).reason,
        Some(Reason::ExitedWithFailure)
    );
}

#[test]
fn a_run_seen_only_after_it_ended_is_told_by_its_pid_or_its_start_time() {
    let pending = || {
        with(ps("job", S::Pending), |p| {
            p.pid = 0;
            p.process_start_time = None;
        })
    };
    let ended = |pid, start: Option<&str>| {
        with(ps("job", S::Completed), |p| {
            p.pid = pid;
            p.process_start_time = start.map(Into::into);
            p.exit_code = 3;
        })
    };
    for (pid, start, announced) in [
        (100, None, vec![Started, Crashed]),   // a server before v1.110.0
        (0, Some(T0), vec![Started, Crashed]), // a pid not known
        (0, None, vec![Crashed]),              // no sign that it ever ran
    ] {
        let mut h = Harness::new();
        h.observe(&[pending()]);
        assert_eq!(
            h.lifecycle(&[ended(pid, start)]),
            announced,
            "{pid} {start:?}"
        );
    }
}

#[test]
fn crash_ids_agree_between_stream_frames_and_rest() {
    let crash_id = |frames: &[ProcessState]| {
        let mut h = Harness::new();
        h.observe(&[ps("w", S::Running)]);
        let events: Vec<_> = frames
            .iter()
            .flat_map(|f| h.observe(std::slice::from_ref(f)))
            .collect();
        find(&events, Crashed).id.clone()
    };
    let frame = |restarts| {
        with(ps("w", S::Restarting), |p| {
            p.exit_code = 2;
            p.restarts = restarts;
        })
    };
    assert_eq!(crash_id(&[frame(0)]), crash_id(&[frame(1)]));
}

#[test]
fn policy_restarts_merged_between_polls() {
    let mut h = Harness::new();
    h.observe(&[ps("w", S::Running)]);
    let events = h.observe(&[with(ps("w", S::Running), |p| {
        p.exit_code = 2;
        p.restarts = 3;
    })]);
    assert_eq!(types(&events), [Crashed, Restarted]);
    assert_eq!(find(&events, Crashed).exit_code, Some(2));
    let restarted = find(&events, Restarted);
    assert_eq!(
        (restarted.restarts, restarted.restarts_delta),
        (Some(3), Some(3))
    );
    assert!(events.iter().all(|e| e.event_type != StatusChanged));
}

#[test]
fn crash_loop_ending_at_max_restarts() {
    let mut h = Harness::new();
    h.observe(&[ps("w", S::Running)]);
    let events = h.observe(&[with(ps("w", S::Completed), |p| {
        p.exit_code = 2;
        p.restarts = 3;
    })]);
    // the merged earlier crashes, the restarts, and the final crash
    assert_eq!(types(&events), [Crashed, Restarted, Crashed]);
    let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
}

#[test]
fn clean_exit_restarted_by_always_is_only_a_restart() {
    let mut h = Harness::new();
    h.observe(&[ps("w", S::Running)]);
    assert_eq!(h.lifecycle(&[ps("w", S::Restarting)]), []);
    let events = h.observe(&[with(ps("w", S::Running), |p| p.restarts = 1)]);
    assert_eq!(types(&events), [Restarted]);
}

#[test]
fn manual_restart_seen_by_a_poller() {
    let mut h = Harness::new();
    h.observe(&[ps("api", S::Running)]);
    let events = h.observe(&[with(ps("api", S::Running), |p| {
        p.pid = 200;
        p.process_start_time = Some(T1.into());
    })]);
    assert_eq!(types(&events), [Stopped, Restarted, Started]);
    assert_eq!(find(&events, Stopped).reason, Some(Reason::ManualRestart));
    let restarted = find(&events, Restarted);
    assert_eq!(restarted.reason, Some(Reason::ManualRestart));
    assert_eq!(restarted.restarts_delta, Some(0));
}

#[test]
fn a_new_start_time_is_a_new_incarnation_even_without_a_pid_yet() {
    let mut h = Harness::new();
    h.observe(&[ps("api", S::Running)]);
    let events = h.observe(&[with(ps("api", S::Running), |p| {
        p.pid = 0;
        p.process_start_time = Some(T1.into());
    })]);
    assert_eq!(types(&events), [Stopped, Restarted, Started]);
}

#[test]
fn a_pid_learned_late_is_not_a_new_incarnation() {
    // Servers before v1.110.0 (no start time): a pid of 0 was "not known yet".
    let old = |pid| {
        with(ps("api", S::Running), |p| {
            p.process_start_time = None;
            p.pid = pid;
        })
    };
    let mut h = Harness::new();
    h.observe(&[old(0)]);
    assert_eq!(h.lifecycle(&[old(300)]), []);
}

#[test]
fn stops_of_different_incarnations_have_different_ids() {
    let stop_id = |from: &str, to: &str| {
        let mut h = Harness::new();
        let at = |start: &str| {
            with(ps("api", S::Running), |p| {
                p.process_start_time = Some(start.into())
            })
        };
        h.observe(&[at(from)]);
        find(&h.observe(&[at(to)]), Stopped).id.clone()
    };
    assert_ne!(stop_id(T0, T1), stop_id(T1, T0));
    // and a removal names the run that was running
    let removed_id = |start: &str| {
        let mut h = Harness::new();
        h.observe(&[with(ps("api", S::Running), |p| {
            p.process_start_time = Some(start.into())
        })]);
        find(&h.observe(&[]), Stopped).id.clone()
    };
    assert_ne!(removed_id(T0), removed_id(T1));
}

#[test]
fn status_changes_agree_between_a_stream_and_a_poll_that_missed_a_step() {
    // The stream sees Terminating; a poll goes straight to Completed. Both name the change
    // to Completed alike, and neither names it like the change to Terminating.
    let mut stream = Harness::new();
    stream.observe(&[ps("api", S::Running)]);
    let terminating = stream.observe(&[ps("api", S::Terminating)]);
    let completed = stream.observe(&[with(ps("api", S::Completed), |p| p.exit_code = -1)]);
    let mut poll = Harness::new();
    poll.observe(&[ps("api", S::Running)]);
    let polled = poll.observe(&[with(ps("api", S::Completed), |p| p.exit_code = -1)]);
    let changed = |events: &[LifecycleEvent]| find(events, StatusChanged).id.clone();
    assert_eq!(changed(&completed), changed(&polled));
    assert_ne!(changed(&terminating), changed(&polled));
}

#[test]
fn a_long_crash_loop_keeps_its_record_small() {
    // Ordinals are kept for the current run only: memory stays bounded however long it runs.
    let mut h = Harness::new();
    let size = |h: &Harness| {
        serde_json::to_string(&h.snapshot.record("w").unwrap())
            .unwrap()
            .len()
    };
    let mut sizes = Vec::new();
    for run in 0..40 {
        h.observe(&[with(ps("w", S::Running), |p| {
            p.restarts = run;
            p.exit_code = 3;
            p.is_ready = Readiness::Ready;
        })]);
        h.observe(&[with(ps("w", S::Restarting), |p| {
            p.restarts = run;
            p.exit_code = 3;
        })]);
        sizes.push(size(&h));
    }
    assert!(sizes[39] < sizes[1] + 16, "{sizes:?}");
}

#[test]
fn manual_restart_without_start_times_uses_the_pid() {
    let old = |status| with(ps("api", status), |p| p.process_start_time = None);
    let mut h = Harness::new();
    h.observe(&[old(S::Running)]);
    let events = h.observe(&[with(old(S::Running), |p| p.pid = 300)]);
    assert_eq!(types(&events), [Stopped, Restarted, Started]);
    // a pid of 0 (a stream frame of a fresh incarnation) is not a new incarnation
    let events = h.observe(&[with(old(S::Running), |p| p.pid = 0)]);
    assert_eq!(types(&events), []);
}

/// A stop seen to its end, then a new incarnation `gap` after the end: the events of the
/// new incarnation's first observation.
/// Settings that say only a restart backoff (and `restart: no`).
fn backoff(seconds: u64) -> ProcessInfo {
    let mut info = ProcessInfo::default();
    info.restart_policy.backoff_seconds = seconds;
    info
}

fn start_after_stop(h: &mut Harness, gap: Duration) -> Vec<EventType> {
    h.observe(&[ps("api", S::Running)]);
    h.observe(&[ps("api", S::Terminating)]);
    h.observe(&[with(ps("api", S::Completed), |p| p.exit_code = -1)]);
    // (each observation is a second after the previous one)
    h.clock += gap - Duration::from_secs(1);
    h.lifecycle(&[with(ps("api", S::Running), |p| {
        p.pid = 200;
        p.process_start_time = Some(T1.into());
    })])
}

#[test]
fn a_start_within_the_backoff_and_a_second_of_a_stop_is_a_manual_restart() {
    // process-compose's default backoff, 1 s: a window of 2 s
    let manual = [Restarted, Started];
    assert_eq!(start_after_stop(&mut Harness::new(), secs(2)), manual);
    assert_eq!(start_after_stop(&mut Harness::new(), secs(3)), [Started]);
    // a backoff of 0 is still process-compose's 1 s
    let mut h = Harness::new();
    h.settings.learn("api", backoff(0));
    assert_eq!(start_after_stop(&mut h, secs(3)), [Started]);
    // the process's own backoff
    let with_backoff = || {
        let mut h = Harness::new();
        h.settings.learn("api", backoff(5));
        h
    };
    assert_eq!(start_after_stop(&mut with_backoff(), secs(6)), manual);
    assert_eq!(start_after_stop(&mut with_backoff(), secs(7)), [Started]);
    assert_eq!(
        start_after_stop(&mut Harness::new(), secs(6)),
        [Started],
        "the backoff is the process's own"
    );
    // polls may see both ends late
    let polled = || {
        let mut h = Harness::new();
        h.lag = secs(2);
        h
    };
    assert_eq!(start_after_stop(&mut polled(), secs(4)), manual);
    assert_eq!(start_after_stop(&mut polled(), secs(5)), [Started]);
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_crash_after_a_stop_and_a_new_start_is_a_crash() {
    // The stop request belongs to the run it stopped, not to the next one.
    let mut h = Harness::new();
    h.observe(&[ps("api", S::Running)]);
    h.observe(&[ps("api", S::Terminating)]);
    h.observe(&[with(ps("api", S::Completed), |p| p.exit_code = -1)]);
    h.clock += secs(5);
    let again = |status| {
        with(ps("api", status), |p| {
            p.pid = 200;
            p.process_start_time = Some(T1.into());
        })
    };
    assert_eq!(h.lifecycle(&[again(S::Running)]), [Started]);
    let events = h.observe(&[with(again(S::Completed), |p| p.exit_code = 3)]);
    assert_eq!(types(&events), [Crashed]);
    assert_eq!(
        find(&events, Crashed).reason,
        Some(Reason::ExitedWithFailure)
    );
}

#[test]
fn a_crash_after_a_manual_restart_is_a_crash() {
    let mut h = Harness::new();
    h.observe(&[ps("api", S::Running)]);
    h.observe(&[ps("api", S::Terminating)]);
    h.observe(&[with(ps("api", S::Completed), |p| p.exit_code = -1)]);
    let again = |status| {
        with(ps("api", status), |p| {
            p.pid = 200;
            p.process_start_time = Some(T1.into());
        })
    };
    assert_eq!(h.lifecycle(&[again(S::Running)]), [Restarted, Started]);
    let events = h.observe(&[with(again(S::Completed), |p| p.exit_code = 3)]);
    assert_eq!(types(&events), [Crashed]);
}

#[test]
fn ids_do_not_depend_on_whether_a_change_was_seen_live() {
    // A poll and a stream frame of the same change name the same event: after a reconnect
    // the catch-up (a snapshot) and a live frame must deduplicate.
    let ids = |synthetic| {
        let mut h = Harness::new();
        h.synthetic = synthetic;
        [
            ps("w", S::Running),
            with(ps("w", S::Restarting), |p| p.exit_code = 2),
            with(ps("w", S::Running), |p| p.restarts = 1),
        ]
        .iter()
        .flat_map(|state| h.observe(std::slice::from_ref(state)))
        .map(|e| (e.id, e.synthetic))
        .collect::<Vec<_>>()
    };
    let (live, polled) = (ids(false), ids(true));
    assert_eq!(live.len(), polled.len());
    for ((live, live_synthetic), (polled, polled_synthetic)) in live.iter().zip(&polled) {
        assert_eq!(live, polled);
        assert!(!live_synthetic && *polled_synthetic);
    }
}

#[test]
fn a_snapshot_survives_its_records() {
    // What a restarted daemon loads: the same ids, the same sequence, no re-announcement.
    let mut h = Harness::new();
    h.observe(&[ps("a", S::Running), ps("b", S::Disabled)]);
    let records: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let json = serde_json::to_vec(&h.snapshot.record(name).unwrap()).unwrap();
            serde_json::from_slice::<ProcessRecord>(&json).unwrap()
        })
        .collect();
    let restored = Snapshot::from_records(records);
    assert_eq!(restored, h.snapshot);
    let mut again = Harness::new();
    again.snapshot = restored;
    assert!(
        again
            .observe(&[ps("a", S::Running), ps("b", S::Disabled)])
            .is_empty()
    );
    let events = again.observe(&[with(ps("a", S::Completed), |p| p.exit_code = 3)]);
    assert_eq!(events[0].seq, 3, "the sequence continues");
    assert_eq!(again.snapshot.changed_names(&h.snapshot), ["a", "b"]);
}

#[test]
fn a_record_carries_the_last_event_of_its_process() {
    let mut h = Harness::new();
    let first = h.observe(&[ps("a", S::Running), ps("b", S::Running)]);
    let last_of =
        |events: &[LifecycleEvent], name: &str| events.iter().rfind(|e| e.process == name).cloned();
    let record_event = |h: &Harness, name: &str| {
        h.snapshot
            .record(name)
            .and_then(|r| r.last_event)
            .map(|e| (*e).clone())
    };
    assert_eq!(record_event(&h, "a"), last_of(&first, "a"));
    // a crashes; b's record keeps its event from before, however old
    let crash = h.observe(&[
        with(ps("a", S::Completed), |p| p.exit_code = 3),
        ps("b", S::Running),
    ]);
    assert!(crash.iter().any(|e| e.event_type == Crashed));
    assert_eq!(record_event(&h, "a"), last_of(&crash, "a"));
    assert_eq!(record_event(&h, "b"), last_of(&first, "b"));
    // one stream frame does the same
    let ctx = h.frame_context();
    let (update, events) = diff_one(&h.snapshot, &ps("b", S::Terminating), &ctx);
    h.snapshot.apply(update);
    assert_eq!(record_event(&h, "b"), last_of(&events, "b"));
    // stored as `last_event`, the one field readers of the bucket use; gone with the process
    let json: serde_json::Value = serde_json::to_value(h.snapshot.record("a").unwrap()).unwrap();
    assert_eq!(
        json["last_event"]["id"],
        last_of(&crash, "a").unwrap().id.as_str()
    );
    h.observe(&[ps("b", S::Terminating)]);
    assert!(h.snapshot.record("a").is_none());
    assert!(!h.snapshot.last_events.contains_key("a"));
}

#[test]
fn a_record_stored_before_the_last_event_existed_still_loads() {
    let mut h = Harness::new();
    h.observe(&[ps("a", S::Running)]);
    let mut json = serde_json::to_value(h.snapshot.record("a").unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("last_event");
    let record: ProcessRecord = serde_json::from_value(json).unwrap();
    assert!(record.last_event.is_none());
    let restored = Snapshot::from_records([record]);
    assert!(restored.last_events.is_empty());
    assert_eq!(restored.state_of("a"), h.snapshot.state_of("a"));
}

#[test]
fn a_snapshot_says_what_it_holds_and_what_changed() {
    let mut h = Harness::new();
    assert!(h.snapshot.is_empty());
    assert_eq!(h.snapshot.len(), 0);
    h.observe(&[ps("a", S::Running), ps("b", S::Running)]);
    let before = h.snapshot.clone();
    assert!(!before.is_empty());
    assert_eq!(before.len(), 2);
    assert_eq!(before.names().collect::<Vec<_>>(), ["a", "b"]);
    // a crashes, b is as it was, c is new
    h.observe(&[
        with(ps("a", S::Completed), |p| p.exit_code = 3),
        ps("b", S::Running),
        ps("c", S::Pending),
    ]);
    assert_eq!(before.changed_names(&h.snapshot), ["a", "c"]);
    // b goes away
    let after = h.snapshot.clone();
    h.observe(&[
        with(ps("a", S::Completed), |p| p.exit_code = 3),
        ps("c", S::Pending),
    ]);
    assert_eq!(after.changed_names(&h.snapshot), ["b"]);
    let records = h.snapshot.records(["a".to_owned(), "b".to_owned()]);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].0, "a");
    assert_eq!(records[0].1, h.snapshot.record("a"));
    assert!(records[0].1.is_some());
    assert_eq!(records[1], ("b".to_owned(), None), "gone");
    assert_eq!(h.snapshot.state_of("c"), Some(&ps("c", S::Pending)));
    assert_eq!(h.snapshot.state_of("b"), None);
}

#[test]
fn one_frame_touches_one_process() {
    let mut h = Harness::new();
    h.observe(&[ps("a", S::Running), ps("b", S::Running)]);
    let ctx = h.frame_context();
    let frame = with(ps("a", S::Completed), |p| p.exit_code = 3);
    let (update, events) = diff_one(&h.snapshot, &frame, &ctx);
    assert_eq!(types(&events), [Crashed]);
    assert!(events.iter().all(|e| e.process == "a" && !e.synthetic));
    assert_eq!(events[0].seq, 3, "a's sequence continues");
    h.snapshot.apply(update);
    // b is still known, and a's new state is what the next diff starts from
    assert_eq!(h.lifecycle(&[frame, ps("b", S::Running)]), []);
}

#[test]
fn manual_restart_seen_step_by_step() {
    // What the stream shows: Terminating, Completed, then a Running frame of the new
    // incarnation with no pid and no start time yet.
    let mut h = Harness::new();
    h.observe(&[ps("api", S::Running)]);
    h.observe(&[ps("api", S::Terminating)]);
    let events = h.observe(&[with(ps("api", S::Completed), |p| p.exit_code = -1)]);
    assert_eq!(types(&events), [Stopped]);
    assert_eq!(find(&events, Stopped).reason, Some(Reason::StopRequested));
    let events = h.observe(&[with(ps("api", S::Running), |p| {
        p.pid = 0;
        p.process_start_time = None;
    })]);
    assert_eq!(types(&events), [Restarted, Started]);
    assert_eq!(find(&events, Restarted).reason, Some(Reason::ManualRestart));
}

#[test]
fn readiness_changes() {
    let mut h = Harness::new();
    let api = |ready| with(ps("api", S::Running), |p| p.is_ready = ready);
    h.observe(&[api(Readiness::Unknown)]);
    assert_eq!(h.lifecycle(&[api(Readiness::Ready)]), [Healthy]);
    assert_eq!(
        h.lifecycle(&[api(Readiness::Ready)]),
        [],
        "still ready: once"
    );
    let events = h.observe(&[api(Readiness::NotReady)]);
    assert_eq!(types(&events), [Unhealthy]);
    assert_eq!(
        find(&events, Unhealthy).severity,
        pc_eventd_events::event::Severity::Warning
    );
    // a reset to "-" is neither healthy nor unhealthy
    assert_eq!(h.lifecycle(&[api(Readiness::Unknown)]), []);
    assert_eq!(h.lifecycle(&[api(Readiness::Unknown)]), []);
}

/// A process with a readiness probe in `status`, readiness `ready`, run `restarts`.
fn probed(status: ProcessStatus, ready: Readiness, restarts: u32) -> ProcessState {
    with(ps("api", status), |p| {
        p.has_ready_probe = true;
        p.is_ready = ready;
        p.restarts = restarts;
        p.exit_code = -1;
    })
}

#[test]
fn a_run_that_is_not_ready_yet_is_starting_not_unhealthy() {
    let mut h = Harness::new();
    h.observe(&[probed(S::Pending, Readiness::Unknown, 0)]);
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::Unknown, 0)]),
        [Started]
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::NotReady, 0)]),
        []
    );
    assert_eq!(h.snapshot.unhealthy(), 0, "starting is not unhealthy");
    let events = h.observe(&[probed(S::Running, Readiness::Ready, 0)]);
    assert_eq!(types(&events), [Healthy]);
    let events = h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    assert_eq!(types(&events), [Unhealthy]);
    assert_eq!(find(&events, Unhealthy).reason, Some(Reason::ReadinessLost));
    assert_eq!(h.snapshot.unhealthy(), 1);
}

#[test]
fn a_run_still_not_ready_after_its_grace_is_unhealthy_once() {
    let mut h = Harness::new();
    h.observe(&[probed(S::Pending, Readiness::Unknown, 0)]);
    h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    let began = h.clock - Duration::from_secs(1);
    // just inside the grace: nothing
    h.clock = began + GRACE - Duration::from_millis(1);
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::NotReady, 0)]),
        []
    );
    let at = began + GRACE;
    assert_eq!(
        h.snapshot.readiness_overdue(at, &h.settings),
        [probed(S::Running, Readiness::NotReady, 0)],
    );
    h.clock = at;
    let events = h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    assert_eq!(types(&events), [Unhealthy]);
    assert_eq!(find(&events, Unhealthy).reason, Some(Reason::NeverReady));
    assert_eq!(
        find(&events, Unhealthy).severity,
        pc_eventd_events::event::Severity::Warning
    );
    assert_eq!(h.snapshot.unhealthy(), 1);
    assert!(
        h.snapshot
            .readiness_overdue(h.clock, &h.settings)
            .is_empty()
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::NotReady, 0)]),
        [],
        "once per run"
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::Ready, 0)]),
        [Healthy]
    );
}

#[test]
fn the_grace_is_per_process() {
    let mut h = Harness::new();
    h.settings = ProcessSettings::default();
    h.settings
        .readiness_grace
        .insert("api".into(), Duration::from_secs(5));
    h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    h.clock += Duration::from_secs(4);
    let events = h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    assert_eq!(types(&events), [Unhealthy]);
    assert_eq!(
        h.settings.readiness_grace_of("other"),
        Duration::from_secs(60)
    );
    h.settings.fixed_readiness_grace = Some(GRACE);
    assert_eq!(
        h.settings.readiness_grace_of("api"),
        GRACE,
        "the configuration's grace wins"
    );
}

#[test]
fn a_run_reported_never_ready_is_not_reported_again_when_it_is_killed() {
    let mut h = Harness::new();
    h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    h.clock += GRACE;
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::NotReady, 0)]),
        [Unhealthy]
    );
    h.observe(&[probed(S::Terminating, Readiness::Unknown, 0)]);
    assert_eq!(
        h.lifecycle(&[probed(S::Restarting, Readiness::Unknown, 0)]),
        [Stopped]
    );
}

#[test]
fn a_probe_that_never_reports_runs_out_the_grace_too() {
    // `-` all along (an initial delay longer than the grace, say): not ready is not ready
    let mut h = Harness::new();
    h.observe(&[probed(S::Running, Readiness::Unknown, 0)]);
    h.clock += GRACE;
    let events = h.observe(&[probed(S::Running, Readiness::Unknown, 0)]);
    assert_eq!(types(&events), [Unhealthy]);
    assert_eq!(find(&events, Unhealthy).reason, Some(Reason::NeverReady));
}

#[test]
fn a_process_without_a_probe_never_waits_for_readiness() {
    let mut h = Harness::new();
    h.observe(&[ps("web", S::Running)]);
    h.clock += GRACE * 2;
    assert_eq!(h.lifecycle(&[ps("web", S::Running)]), []);
    assert!(
        h.snapshot
            .readiness_overdue(h.clock, &h.settings)
            .is_empty()
    );
}

#[test]
fn the_first_announcement_of_a_starting_run_is_not_unhealthy() {
    let mut h = Harness::new();
    let events = h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    assert_eq!(types(&events), [Started]);
    h.clock += GRACE;
    let events = h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    assert_eq!(types(&events), [Unhealthy]);
    assert_eq!(find(&events, Unhealthy).reason, Some(Reason::NeverReady));
}

#[test]
fn a_restarted_healthy_process_starts_over() {
    let mut h = Harness::new();
    h.observe(&[probed(S::Running, Readiness::Ready, 0)]);
    // a policy restart: the new run is not ready yet, then its probe fails once, then passes
    assert_eq!(
        h.lifecycle(&[probed(S::Restarting, Readiness::Unknown, 0)]),
        [Crashed]
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::Unknown, 1)]),
        [Restarted]
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::NotReady, 1)]),
        []
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::Ready, 1)]),
        [Healthy]
    );
    // a manual restart (a new incarnation) starts over too
    let fresh = |ready| {
        with(probed(S::Running, ready, 1), |p| {
            p.pid = 200;
            p.process_start_time = Some(T1.into());
        })
    };
    assert_eq!(
        h.lifecycle(&[fresh(Readiness::Unknown)]),
        [Stopped, Restarted, Started]
    );
    assert_eq!(h.lifecycle(&[fresh(Readiness::NotReady)]), []);
    assert_eq!(h.snapshot.unhealthy(), 0);
}

#[test]
fn a_run_killed_for_never_becoming_ready_says_so() {
    // process-compose stops a run at the probe's failure threshold and its policy restarts
    // it: Terminating, then Restarting, then the next run.
    let mut h = Harness::new();
    h.observe(&[probed(S::Running, Readiness::NotReady, 0)]);
    assert_eq!(
        h.lifecycle(&[probed(S::Terminating, Readiness::Unknown, 0)]),
        []
    );
    let events = h.observe(&[probed(S::Restarting, Readiness::Unknown, 0)]);
    assert_eq!(types(&events), [Unhealthy, Stopped]);
    assert_eq!(find(&events, Unhealthy).reason, Some(Reason::NeverReady));
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::Unknown, 1)]),
        [Restarted]
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Running, Readiness::NotReady, 1)]),
        [],
        "the next run starts over"
    );
    // a poller that missed the steps sees the count rise
    let events = h.observe(&[probed(S::Running, Readiness::Unknown, 2)]);
    assert_eq!(types(&events), [Unhealthy, Crashed, Restarted]);
    // a run that never failed its probe (stopped before the first one) is no such case
    assert_eq!(
        h.lifecycle(&[probed(S::Terminating, Readiness::Unknown, 2)]),
        []
    );
    assert_eq!(
        h.lifecycle(&[probed(S::Restarting, Readiness::Unknown, 2)]),
        [Stopped]
    );
}

#[test]
fn readiness_flaps_get_distinct_ids() {
    let mut h = Harness::new();
    let api = |ready| with(ps("api", S::Running), |p| p.is_ready = ready);
    h.observe(&[api(Readiness::Unknown)]);
    let first = h.observe(&[api(Readiness::Ready)]);
    h.observe(&[api(Readiness::NotReady)]);
    let second = h.observe(&[api(Readiness::Ready)]);
    assert_ne!(first[0].id, second[0].id);
}

#[test]
fn a_new_run_that_is_ready_is_healthy_again() {
    let mut h = Harness::new();
    let api = |restarts| {
        with(ps("api", S::Running), |p| {
            p.is_ready = Readiness::Ready;
            p.restarts = restarts;
        })
    };
    h.observe(&[api(0)]);
    assert_eq!(h.lifecycle(&[api(1)]), [Restarted, Healthy]);
}

#[test]
fn readiness_failure_threshold_restart() {
    let mut h = Harness::new();
    let api = |status, ready, restarts| {
        with(ps("api", status), |p| {
            p.is_ready = ready;
            p.restarts = restarts;
            p.exit_code = -1;
        })
    };
    h.observe(&[api(S::Running, Readiness::Ready, 0)]);
    assert_eq!(
        h.lifecycle(&[api(S::Running, Readiness::NotReady, 0)]),
        [Unhealthy]
    );
    assert_eq!(
        h.lifecycle(&[api(S::Terminating, Readiness::Unknown, 0)]),
        []
    );
    assert_eq!(
        h.lifecycle(&[api(S::Restarting, Readiness::Unknown, 0)]),
        [Stopped]
    );
    assert_eq!(
        h.lifecycle(&[api(S::Running, Readiness::Unknown, 1)]),
        [Restarted]
    );
}

#[test]
fn daemons_launch_once() {
    let mut h = Harness::new();
    h.observe(&[ps("d", S::Pending)]);
    assert_eq!(h.lifecycle(&[ps("d", S::Launching)]), [Started]);
    assert_eq!(h.lifecycle(&[ps("d", S::Launched)]), []);
}

#[test]
fn rest_overlays_are_not_lifecycle_changes() {
    let mut h = Harness::new();
    h.observe(&[ps("cron", S::Completed)]);
    assert!(h.observe(&[ps("cron", S::Scheduled)]).is_empty());
    assert!(h.observe(&[ps("cron", S::Watching)]).is_empty());
}

#[test]
fn unchanged_state_yields_nothing() {
    let mut h = Harness::new();
    let all = [ps("a", S::Running), ps("b", S::Completed)];
    h.observe(&all);
    assert!(h.observe(&all).is_empty());
}

#[test]
fn disappearing_processes() {
    let mut h = Harness::new();
    h.observe(&[ps("a", S::Running), ps("b", S::Completed)]);
    let events = h.observe(&[]);
    assert_eq!(types(&events), [Stopped]);
    assert_eq!(events[0].process, "a");
    assert_eq!(events[0].reason, Some(Reason::Removed));
    assert!(h.snapshot.is_empty());
}

#[test]
fn only_a_running_process_that_disappears_is_stopped() {
    // Never started, ended and reported, or waiting for its policy restart (a poll saw the
    // count rise): nothing was running, so nothing stops.
    let mut h = Harness::new();
    h.observe(&[ps("idle", S::Pending), ps("w", S::Running)]);
    h.observe(&[
        ps("idle", S::Pending),
        with(ps("w", S::Restarting), |p| {
            p.exit_code = 3;
            p.restarts = 1;
        }),
    ]);
    assert_eq!(h.lifecycle(&[]), []);
}

#[test]
fn a_run_whose_end_was_reported_is_not_stopped_by_a_manual_restart() {
    // Its crash was reported (a `Restarting` frame), and it shows `Running` before the count
    // rises; a manual restart then replaces an incarnation whose last run is over already.
    let mut h = Harness::new();
    h.observe(&[ps("w", S::Running)]);
    let crash = with(ps("w", S::Restarting), |p| p.exit_code = 3);
    assert_eq!(h.lifecycle(&[crash]), [Crashed]);
    assert_eq!(h.lifecycle(&[ps("w", S::Running)]), []);
    let events = h.observe(&[with(ps("w", S::Running), |p| {
        p.pid = 200;
        p.process_start_time = Some(T1.into());
    })]);
    assert_eq!(types(&events), [Restarted, Started]);
}

#[test]
fn seq_increases_per_process_even_across_removal() {
    let mut h = Harness::new();
    let mut seqs = Vec::new();
    for observed in [
        vec![ps("a", S::Pending), ps("b", S::Running)],
        vec![ps("a", S::Running)],
        vec![],
        vec![ps("a", S::Running)],
    ] {
        seqs.extend(
            h.observe(&observed)
                .into_iter()
                .filter(|e| e.process == "a")
                .map(|e| e.seq),
        );
    }
    assert!(seqs.len() >= 4);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn ids_do_not_depend_on_when_or_by_whom_a_state_was_first_seen() {
    // A restarted daemon sees the same running process again: same ids, so JetStream
    // deduplicates the re-announcement.
    let running = [with(ps("web", S::Running), |p| {
        p.is_ready = Readiness::Ready
    })];
    let mut first = Harness::new();
    first.observe(&[ps("web", S::Pending)]);
    first.observe(&[ps("web", S::Running)]);
    let original: Vec<_> = first.observe(&running);
    let mut restarted = Harness::new();
    let again = restarted.observe(&running);
    let healthy = |events: &[LifecycleEvent]| find(events, Healthy).id.clone();
    assert_eq!(healthy(&original), healthy(&again));
    let started_first = {
        let mut h = Harness::new();
        h.observe(&[ps("web", S::Pending)]);
        find(&h.observe(&[ps("web", S::Running)]), Started)
            .id
            .clone()
    };
    assert_eq!(started_first, find(&again, Started).id);
}

#[test]
fn namespaces_and_odd_names_shape_the_subject() {
    let mut h = Harness::new();
    let events = h.observe(&[with(ps("api.v2", S::Running), |p| {
        p.namespace = Namespaces::from(["backend", "jobs"]);
    })]);
    let started = find(&events, Started);
    assert_eq!(started.subject, "core.process.backend.api%2Ev2.started");
    assert_eq!(started.process, "api.v2");
    assert_eq!(started.namespace, "backend");
    assert_eq!(started.state.namespaces, ["backend", "jobs"]);
}

/// Settings with a restart policy.
fn policy(restart: u8, max_restarts: u32) -> ProcessInfo {
    let mut info = ProcessInfo::default();
    info.restart_policy.restart = restart;
    info.restart_policy.max_restarts = max_restarts;
    info
}

fn failed(p: ProcessState, code: i32, restarts: u32) -> ProcessState {
    with(p, |p| {
        p.exit_code = code;
        p.restarts = restarts;
    })
}

mod given_up {
    use super::*;
    use pc_eventd_events::event::GivenUpPolicy;
    use pc_eventd_events::process_compose::model::restart;

    #[test]
    fn a_spent_max_restarts_gives_up_once_after_the_crash() {
        let mut h = Harness::new();
        h.settings.learn("w", policy(restart::ON_FAILURE, 2));
        h.observe(&[ps("w", S::Running)]);
        h.observe(&[failed(ps("w", S::Restarting), 1, 0)]);
        h.observe(&[failed(ps("w", S::Running), 1, 1)]);
        h.observe(&[failed(ps("w", S::Restarting), 1, 1)]);
        h.observe(&[failed(ps("w", S::Running), 1, 2)]);
        let events = h.observe(&[failed(ps("w", S::Completed), 1, 2)]);
        assert_eq!(types(&events), [Crashed, GivenUp]);
        let given_up = find(&events, GivenUp);
        assert_eq!(
            given_up.severity,
            pc_eventd_events::event::Severity::Critical
        );
        let said = given_up.given_up.as_ref().unwrap();
        assert_eq!(said.policy, GivenUpPolicy::MaxRestarts);
        assert_eq!((said.restarts, said.max_restarts), (2, Some(2)));
        assert_eq!(
            h.lifecycle(&[failed(ps("w", S::Completed), 1, 2)]),
            [],
            "once"
        );
    }

    #[test]
    fn restart_no_and_exit_on_failure_give_up_at_the_first_failure() {
        for (rule, expected) in [
            (restart::NO, GivenUpPolicy::No),
            (restart::EXIT_ON_FAILURE, GivenUpPolicy::ExitOnFailure),
        ] {
            let mut h = Harness::new();
            h.settings.learn("w", policy(rule, 0));
            h.observe(&[ps("w", S::Running)]);
            let events = h.observe(&[failed(ps("w", S::Completed), 3, 0)]);
            assert_eq!(types(&events), [Crashed, GivenUp]);
            let said = find(&events, GivenUp).given_up.clone().unwrap();
            assert_eq!((said.policy, said.max_restarts), (expected, None));
        }
    }

    #[test]
    fn a_success_a_stop_or_a_policy_with_restarts_left_is_not_given_up() {
        let mut h = Harness::new();
        h.settings.learn("w", policy(restart::NO, 0));
        h.observe(&[ps("w", S::Running)]);
        assert_eq!(
            h.lifecycle(&[failed(ps("w", S::Completed), 0, 0)]),
            [Stopped]
        );

        let mut h = Harness::new();
        h.settings.learn("w", policy(restart::NO, 0));
        h.observe(&[ps("w", S::Running)]);
        h.observe(&[ps("w", S::Terminating)]);
        assert_eq!(
            h.lifecycle(&[failed(ps("w", S::Completed), -1, 0)]),
            [Stopped]
        );

        // A poll that missed the stop of a process whose policy would restart it.
        for (rule, max) in [(restart::ALWAYS, 0), (restart::ON_FAILURE, 5)] {
            let mut h = Harness::new();
            h.settings.learn("w", policy(rule, max));
            h.observe(&[ps("w", S::Running)]);
            assert_eq!(
                h.lifecycle(&[failed(ps("w", S::Completed), -1, 0)]),
                [Crashed]
            );
        }

        let mut h = Harness::new();
        h.observe(&[ps("w", S::Running)]);
        assert_eq!(
            h.lifecycle(&[failed(ps("w", S::Completed), 1, 0)]),
            [Crashed],
            "settings not read: nothing is guessed"
        );
    }
}

mod file_watch {
    use super::*;
    use pc_eventd_events::event::Reason;

    fn watched(p: ProcessState, trigger: Option<&str>) -> ProcessState {
        with(p, |p| p.watch_trigger_time = trigger.map(str::to_owned))
    }

    #[test]
    fn a_watcher_restart_seen_by_a_poll_is_a_stop_and_a_restart_for_the_watcher() {
        let mut h = Harness::new();
        h.synthetic = true;
        h.observe(&[watched(ps("api", S::Running), None)]);
        let events = h.observe(&[watched(
            with(ps("api", S::Running), |p| {
                p.pid = 200;
                p.process_start_time = Some(T1.into());
            }),
            Some(T1),
        )]);
        assert_eq!(types(&events), [Stopped, Restarted, Started]);
        for event in [find(&events, Stopped), find(&events, Restarted)] {
            assert_eq!(event.reason, Some(Reason::FileWatch), "{event:?}");
        }
    }

    #[test]
    fn the_signal_that_ended_the_old_run_is_not_a_crash() {
        let mut h = Harness::new();
        h.settings.learn("api", policy(0, 0));
        h.synthetic = true;
        h.observe(&[watched(ps("api", S::Running), Some(T0))]);
        let events = h.observe(&[watched(failed(ps("api", S::Completed), -1, 0), Some(T1))]);
        assert_eq!(types(&events), [Stopped], "no crash, nothing given up");
        assert_eq!(find(&events, Stopped).reason, Some(Reason::FileWatch));
        // the new run, in a later poll, is the watcher's restart too
        let events = h.observe(&[watched(
            with(ps("api", S::Running), |p| {
                p.process_start_time = Some(T1.into())
            }),
            Some(T1),
        )]);
        assert_eq!(types(&events), [Started]);
        // and what comes after it is not
        let new_run = |p: ProcessState| with(p, |p| p.process_start_time = Some(T1.into()));
        h.observe(&[watched(new_run(ps("api", S::Terminating)), Some(T1))]);
        let events = h.observe(&[watched(
            new_run(failed(ps("api", S::Completed), -1, 0)),
            Some(T1),
        )]);
        assert_eq!(find(&events, Stopped).reason, Some(Reason::StopRequested));
    }

    #[test]
    fn the_old_runs_end_arriving_after_the_new_runs_start_is_stale() {
        let mut h = Harness::new();
        let new_run = || {
            watched(
                with(ps("api", S::Running), |p| {
                    p.pid = 300;
                    p.process_start_time = Some(T1.into());
                }),
                Some(T1),
            )
        };
        h.observe(&[watched(ps("api", S::Running), Some(T0))]);
        h.observe(&[watched(ps("api", S::Terminating), Some(T1))]);
        assert_eq!(h.lifecycle(&[new_run()]), [Stopped, Restarted, Started]);
        // process-compose publishes the old run's end last
        let late_end = failed(ps("api", S::Completed), -1, 0);
        assert_eq!(h.observe(std::slice::from_ref(&late_end)), []);
        assert_eq!(h.snapshot.state_of("api"), Some(&new_run()));
        // the new run's own end is not stale
        let end = with(late_end, |p| p.process_start_time = Some(T1.into()));
        assert_eq!(h.lifecycle(&[end]), [Crashed]);
    }

    #[test]
    fn frames_without_the_trigger_keep_the_last_one_known() {
        let mut h = Harness::new();
        h.observe(&[watched(ps("api", S::Running), Some(T0))]);
        // a stream's frames carry no trigger: not a new one
        h.observe(&[watched(ps("api", S::Terminating), None)]);
        let events = h.observe(&[watched(failed(ps("api", S::Completed), -1, 0), None)]);
        assert_eq!(find(&events, Stopped).reason, Some(Reason::StopRequested));
        // the start, completed from REST, shows the trigger moved
        let events = h.observe(&[watched(
            with(ps("api", S::Running), |p| {
                p.pid = 300;
                p.process_start_time = Some(T1.into());
            }),
            Some(T1),
        )]);
        assert_eq!(types(&events), [Restarted, Started]);
        assert_eq!(find(&events, Restarted).reason, Some(Reason::FileWatch));
    }
}

mod conditions {
    use super::*;
    use crate::diff::conditions::{PressureRule, SilenceRule};
    use pc_eventd_events::event::Resource;
    use pc_eventd_events::pattern::ProcessPattern;

    const MIB: i64 = 1024 * 1024;

    fn sampling(rules: ConditionRules) -> Harness {
        let mut h = Harness::new();
        h.synthetic = true;
        h.settings.conditions = rules;
        h
    }

    fn memory_rule(limit_mib: u64, hold: u64) -> ConditionRules {
        ConditionRules {
            pressure: vec![PressureRule {
                processes: vec![ProcessPattern::new("web*")],
                memory: Some(limit_mib << 20),
                cpu: None,
                duration: secs(hold),
            }],
            ..ConditionRules::default()
        }
    }

    fn using(mem_mib: i64, cpu: f64) -> ProcessState {
        with(ps("web", S::Running), |p| {
            p.mem = mem_mib * MIB;
            p.cpu = cpu;
        })
    }

    /// The event types of a run of samples one second apart.
    fn samples(h: &mut Harness, mem_mib: &[i64]) -> Vec<EventType> {
        mem_mib
            .iter()
            .flat_map(|m| h.lifecycle(&[using(*m, 1.0)]))
            .collect()
    }

    #[test]
    fn above_the_threshold_for_its_duration_is_pressure_and_under_it_as_long_recovers() {
        let mut h = sampling(memory_rule(512, 3));
        h.observe(&[ps("web", S::Running)]);
        // above at t=1,2,3: the third second completes the duration
        assert_eq!(samples(&mut h, &[600, 600, 600]), []);
        let events = h.observe(&[using(600, 1.0)]);
        assert_eq!(types(&events), [ResourcePressure]);
        let p = find(&events, ResourcePressure).pressure.clone().unwrap();
        assert_eq!(p.resource, Resource::Memory);
        assert_eq!(
            (p.value, p.threshold, p.for_seconds),
            (600.0 * MIB as f64, 512.0 * MIB as f64, 3)
        );
        assert_eq!(samples(&mut h, &[700, 700]), [], "once per episode");
        assert_eq!(samples(&mut h, &[100, 100, 100]), []);
        let events = h.observe(&[using(100, 1.0)]);
        assert_eq!(types(&events), [ResourceRecovered]);
        assert_eq!(
            find(&events, ResourceRecovered)
                .pressure
                .as_ref()
                .unwrap()
                .value,
            100.0 * MIB as f64
        );
    }

    #[test]
    fn a_new_run_ends_the_episode_and_may_start_its_own() {
        let mut h = sampling(memory_rule(512, 1));
        h.observe(&[ps("web", S::Running)]);
        assert_eq!(samples(&mut h, &[600, 600]), [ResourcePressure]);
        // restarted (by a remediator, say): the first reading of the new run ends the episode
        let next_run = |mem_mib: i64| with(using(mem_mib, 1.0), |p| p.restarts = 1);
        let restarting = h.observe(&[with(ps("web", S::Restarting), |p| p.restarts = 1)]);
        assert_eq!(types(&restarting), [Restarted]);
        let events = h.observe(&[next_run(700)]);
        assert_eq!(types(&events), [ResourceRecovered]);
        let recovered = find(&events, ResourceRecovered);
        assert_eq!(
            recovered.pressure.as_ref().unwrap().value,
            700.0 * MIB as f64
        );
        // and the new run, still over, is under pressure again after the duration
        let again = h.observe(&[next_run(700)]);
        assert_eq!(types(&again), [ResourcePressure]);
        assert_ne!(again[0].id, recovered.id);
    }

    #[test]
    fn a_reading_at_the_threshold_is_not_above_it() {
        let mut h = sampling(memory_rule(512, 0));
        h.observe(&[ps("web", S::Running)]);
        assert_eq!(samples(&mut h, &[512, 512]), []);
        assert_eq!(samples(&mut h, &[513]), [ResourcePressure]);
        assert_eq!(samples(&mut h, &[512]), [ResourceRecovered]);
    }

    #[test]
    fn a_reading_that_wobbles_around_the_threshold_does_not_flap() {
        let mut h = sampling(memory_rule(512, 3));
        h.observe(&[ps("web", S::Running)]);
        assert_eq!(samples(&mut h, &[600, 600, 500, 600, 600, 500, 600]), []);
        assert_eq!(samples(&mut h, &[600, 600, 600, 600]), [ResourcePressure]);
        assert_eq!(samples(&mut h, &[500, 600, 500, 500, 600, 500]), []);
    }

    #[test]
    fn only_selected_running_measured_processes_are_read() {
        let mut h = sampling(memory_rule(512, 0));
        h.observe(&[ps("api", S::Running)]);
        assert_eq!(
            h.lifecycle(&[with(ps("api", S::Running), |p| p.mem = 900 * MIB)]),
            []
        );
        // a daemon (-1) and a stopped process's last figures are no readings
        h.observe(&[with(ps("web", S::Running), |p| p.mem = -1)]);
        assert_eq!(
            h.lifecycle(&[with(ps("web", S::Running), |p| p.mem = -1)]),
            []
        );
        let mut h = sampling(memory_rule(512, 0));
        h.observe(&[ps("web", S::Running)]);
        h.observe(&[ps("web", S::Terminating)]);
        assert_eq!(
            types(&h.observe(&[with(ps("web", S::Completed), |p| p.mem = 900 * MIB)])),
            [Stopped]
        );
    }

    #[test]
    fn a_process_not_measured_yet_has_no_reading() {
        let mut h = sampling(ConditionRules {
            pressure: vec![PressureRule {
                processes: vec![ProcessPattern::any()],
                memory: None,
                cpu: Some(50.0),
                duration: secs(0),
            }],
            ..ConditionRules::default()
        });
        h.observe(&[ps("web", S::Running)]);
        // process-compose reports 0 until its first sample; its cpu then means nothing
        assert_eq!(h.lifecycle(&[using(0, 95.0)]), []);
        assert_eq!(h.lifecycle(&[using(1, 95.0)]), [ResourcePressure]);
    }

    #[test]
    fn rules_without_processes_select_every_process() {
        let rules: ConditionRules = serde_json::from_value(serde_json::json!({
            "pressure": [{"memory": 1024, "for": "1s"}],
            "silence": [{"after": "1m"}],
        }))
        .unwrap();
        assert_eq!(
            rules.threshold(Resource::Memory, "any", "thing"),
            Some((1024.0, secs(1)))
        );
        assert_eq!(rules.threshold(Resource::Cpu, "any", "thing"), None);
        assert_eq!(rules.silence_after("any", "thing"), Some(secs(60)));
        assert!(!rules.is_empty());
        assert!(ConditionRules::default().is_empty());
        let only_silence = ConditionRules {
            pressure: Vec::new(),
            ..rules.clone()
        };
        assert!(!only_silence.is_empty());
        let only_pressure = ConditionRules {
            silence: Vec::new(),
            ..rules
        };
        assert!(!only_pressure.is_empty());
    }

    #[test]
    fn stream_frames_carry_no_readings() {
        let mut h = sampling(memory_rule(512, 0));
        h.synthetic = false;
        h.observe(&[ps("web", S::Running)]);
        assert_eq!(samples(&mut h, &[900, 900]), []);
    }

    #[test]
    fn cpu_and_memory_are_separate_episodes_with_their_own_ids() {
        let mut h = sampling(ConditionRules {
            pressure: vec![PressureRule {
                processes: vec![ProcessPattern::any()],
                memory: Some(512 << 20),
                cpu: Some(80.0),
                duration: secs(0),
            }],
            ..ConditionRules::default()
        });
        h.observe(&[ps("web", S::Running)]);
        let events = h.observe(&[using(600, 95.0)]);
        assert_eq!(types(&events), [ResourcePressure, ResourcePressure]);
        assert_ne!(events[0].id, events[1].id);
        let events = h.observe(&[using(600, 10.0)]);
        assert_eq!(types(&events), [ResourceRecovered]);
        assert_eq!(events[0].pressure.as_ref().unwrap().resource, Resource::Cpu);
    }

    fn silence_rule(after: u64) -> ConditionRules {
        ConditionRules {
            silence: vec![SilenceRule {
                processes: vec![ProcessPattern::any()],
                after: secs(after),
            }],
            ..ConditionRules::default()
        }
    }

    fn printed(at: &str) -> ProcessState {
        with(ps("web", S::Running), |p| {
            p.last_activity_time = Some(at.into())
        })
    }

    #[test]
    fn silence_longer_than_the_threshold_then_output_again() {
        let mut h = sampling(silence_rule(60));
        let last = "1970-01-01T00:00:10Z";
        h.observe(&[printed(last)]);
        h.clock = std::time::UNIX_EPOCH + secs(70);
        assert_eq!(
            h.lifecycle(&[printed(last)]),
            [],
            "60 s is not longer than 60 s"
        );
        let events = h.observe(&[printed(last)]);
        assert_eq!(types(&events), [Silent]);
        let said = find(&events, Silent).silence.clone().unwrap();
        assert_eq!(
            (said.threshold_seconds, said.last_output.as_deref()),
            (60, Some(last))
        );
        assert_eq!(h.lifecycle(&[printed(last)]), [], "once");
        let events = h.observe(&[printed("1970-01-01T00:01:40+00:00")]);
        assert_eq!(types(&events), [OutputResumed]);
        assert_eq!(
            find(&events, OutputResumed)
                .silence
                .as_ref()
                .unwrap()
                .silent_seconds,
            Some(90)
        );
    }

    #[test]
    fn a_process_that_never_printed_is_silent_from_its_start() {
        let mut h = sampling(silence_rule(5));
        h.observe(&[ps("web", S::Running)]);
        h.clock += secs(5);
        assert_eq!(h.lifecycle(&[ps("web", S::Running)]), [Silent]);
        assert_eq!(
            h.lifecycle(&[printed("1970-01-01T00:00:08Z")]),
            [OutputResumed]
        );
    }

    #[test]
    fn monitor_for_silence_applies_without_a_rule() {
        let mut h = sampling(ConditionRules::default());
        let mut info = ProcessInfo {
            monitor_for: pc_eventd_events::process_compose::model::MONITOR_FOR_SILENCE,
            ..ProcessInfo::default()
        };
        info.monitor_silence_threshold_ns = 2_000_000_000;
        h.settings.learn("web", info);
        h.observe(&[printed("1970-01-01T00:00:00Z")]);
        h.observe(&[printed("1970-01-01T00:00:00Z")]);
        assert_eq!(
            h.lifecycle(&[printed("1970-01-01T00:00:00Z")]),
            [],
            "2 s is not over 2 s"
        );
        assert_eq!(h.lifecycle(&[printed("1970-01-01T00:00:00Z")]), [Silent]);
    }

    #[test]
    fn usage_changes_store_nothing() {
        let mut h = sampling(memory_rule(512, 60));
        h.observe(&[using(100, 1.0)]);
        let before = h.snapshot.clone();
        h.observe(&[using(120, 3.0)]);
        assert!(before.changed_names(&h.snapshot).is_empty());
        assert_eq!(h.snapshot.usage["web"].mem, 120 * MIB);
    }
}
