//! Remediation policy: which lifecycle events are triggers, whether a process still needs the
//! restart a trigger asked for, whether to restart it now, and when to stop trying. Pure: the
//! events, the process's state, the planner's history and the clock go in, a decision comes out.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use pc_eventd_events::event::{EventType, GivenUpPolicy, LifecycleEvent, Reason, Resource};
use pc_eventd_events::pattern::{ProcessPattern, any_matches};
use pc_eventd_events::process_compose::model::{ProcessState, Readiness};
use serde::{Deserialize, Serialize};

/// Which lifecycle events call for a decision: `[remediate] on` and `pressure_resources`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Triggers {
    /// The event types that trigger a restart.
    pub on: Vec<EventType>,
    /// With `resource_pressure` in `on`: the resources whose pressure does.
    pub pressure_resources: Vec<Resource>,
}

/// Why a lifecycle event is no trigger. It gets no decision and no outcome event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotATrigger {
    /// Its type is not in `on`.
    NotOn,
    /// The file watcher's restart (`reason: file_watch`): neither a crash nor a fault.
    FileWatch,
    /// Pressure of a resource not in `pressure_resources` (or a pressure event without its
    /// reading).
    Resource,
    /// `given_up` while `crashed` is a trigger: the crash of the same run, published just
    /// before it, was the trigger.
    CrashWasTheTrigger,
    /// `given_up` by `exit_on_failure`: process-compose is shutting the project down.
    ProjectShutdown,
}

impl NotATrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOn => "not_on",
            Self::FileWatch => "file_watch",
            Self::Resource => "resource_not_remediated",
            Self::CrashWasTheTrigger => "crash_was_the_trigger",
            Self::ProjectShutdown => "project_shutdown",
        }
    }
}

impl Triggers {
    /// Whether `event` calls for a decision, or why not.
    pub fn admit(&self, event: &LifecycleEvent) -> Result<(), NotATrigger> {
        if !self.on.contains(&event.event_type) {
            return Err(NotATrigger::NotOn);
        }
        // Whatever type it has, and whatever `on` says.
        if event.reason == Some(Reason::FileWatch) {
            return Err(NotATrigger::FileWatch);
        }
        match event.event_type {
            EventType::ResourcePressure => match &event.pressure {
                Some(pressure) if self.pressure_resources.contains(&pressure.resource) => Ok(()),
                _ => Err(NotATrigger::Resource),
            },
            EventType::GivenUp if self.on.contains(&EventType::Crashed) => {
                Err(NotATrigger::CrashWasTheTrigger)
            }
            EventType::GivenUp
                if event
                    .given_up
                    .as_ref()
                    .is_some_and(|g| g.policy == GivenUpPolicy::ExitOnFailure) =>
            {
                Err(NotATrigger::ProjectShutdown)
            }
            _ => Ok(()),
        }
    }
}

/// Whether `current` shows the process no longer in the state `trigger` reported: a new run is
/// up (or on its way, by process-compose's own restart policy); for `unhealthy`, it is ready
/// again; for `resource_pressure`, the run under pressure is over or its reading is back under
/// the threshold.
pub(crate) fn recovered(trigger: &LifecycleEvent, current: &ProcessState) -> bool {
    let status = current.status.normalized();
    let new_run = current.pid != trigger.state.pid;
    match trigger.event_type {
        EventType::Unhealthy => {
            current.is_ready == Readiness::Ready || (status.is_active() && new_run)
        }
        // Its end, if it ended, is an event of its own.
        EventType::ResourcePressure => {
            !status.is_running() || new_run || !still_over(trigger, current)
        }
        // Crashed: anything but an ended run is somebody else's restart.
        _ => !status.is_ended(),
    }
}

/// Whether `current`'s reading of the trigger's resource is still above its threshold; true
/// when there is no reading to tell.
fn still_over(trigger: &LifecycleEvent, current: &ProcessState) -> bool {
    let Some(pressure) = &trigger.pressure else {
        return true;
    };
    // Not positive: a daemon, or not measured yet.
    let reading = (current.mem > 0).then_some(match pressure.resource {
        Resource::Memory => current.mem as f64,
        Resource::Cpu => current.cpu,
    });
    reading.is_none_or(|value| value > pressure.threshold)
}

/// How hard to try for one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Restarts allowed per `window` for one process; past it, triggers are skipped.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Wait before a restart, doubled for every earlier attempt still in the window.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A restart counts as failed when the API refuses it, or when the process crashes or goes
    /// unhealthy again less than this long after it.
    #[serde(with = "humantime_serde")]
    pub settle_time: Duration,
    /// Consecutive failed restarts that open the circuit breaker (0: never).
    pub breaker_failures: u32,
    /// How long an open breaker skips every trigger; then one attempt is allowed again.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            window: Duration::from_secs(600),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            settle_time: Duration::from_secs(60),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(900),
        }
    }
}

/// A policy for the processes `pattern` selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `NAME` or `NAMESPACE/NAME`, globs (`*` any run of characters, `?` one character).
    #[serde(rename = "match")]
    pub pattern: ProcessPattern,
    #[serde(flatten)]
    pub policy: Policy,
}

/// Which processes may be touched, and with which policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policies {
    /// Empty allows every process.
    pub allow: Vec<ProcessPattern>,
    /// A denied process is never restarted, even when allowed.
    pub deny: Vec<ProcessPattern>,
    /// The first matching rule wins; `default` applies to the rest.
    pub rules: Vec<Rule>,
    pub default: Policy,
}

impl Policies {
    /// The policy for `namespace/name`, or why the process may not be touched.
    pub fn for_process(&self, namespace: &str, name: &str) -> Result<&Policy, Skip> {
        if any_matches(&self.deny, namespace, name) {
            return Err(Skip::Denied);
        }
        if !self.allow.is_empty() && !any_matches(&self.allow, namespace, name) {
            return Err(Skip::NotAllowed);
        }
        Ok(self
            .rules
            .iter()
            .find(|rule| rule.pattern.matches(namespace, name))
            .map_or(&self.default, |rule| &rule.policy))
    }
}

/// Why a trigger did not lead to a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Denied,
    NotAllowed,
    /// `max_attempts` restarts within `window` already.
    LimitReached,
    /// The circuit breaker is open until this time.
    BreakerOpen(SystemTime),
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::NotAllowed => "not_allowed",
            Self::LimitReached => "limit_reached",
            Self::BreakerOpen(_) => "breaker_open",
        }
    }
}

/// What to do about one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Restart after `delay`; this is attempt `attempt` in the window.
    Restart {
        attempt: u32,
        delay: Duration,
    },
    Skip(Skip),
}

/// What happened to a restart, as the planner needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptResult {
    /// Requested (or, in a dry run, would have been).
    Restarted,
    /// The API refused it.
    Failed,
}

/// One process's recent restarts.
#[derive(Debug, Default, Clone)]
struct Attempts {
    attempts: VecDeque<SystemTime>,
    /// When the last restart was requested, while it has not yet proven itself.
    unsettled: Option<SystemTime>,
    consecutive_failures: u32,
    breaker_until: Option<SystemTime>,
}

/// The restart history of every process, and the decisions made from it.
#[derive(Debug, Default)]
pub(crate) struct Planner {
    attempts: BTreeMap<String, Attempts>,
}

impl Planner {
    /// Decides about a trigger for `key` (`namespace/name`) at `now` under `policy`.
    pub(crate) fn decide(&mut self, key: &str, policy: &Policy, now: SystemTime) -> Decision {
        let history = self.attempts.entry(key.to_owned()).or_default();
        // A trigger soon after our restart means that restart did not help.
        if let Some(at) = history.unsettled.take() {
            if elapsed(at, now) < policy.settle_time {
                history.consecutive_failures += 1;
            } else {
                history.consecutive_failures = 0;
            }
        }
        if policy.breaker_failures > 0 && history.consecutive_failures >= policy.breaker_failures {
            let until = *history
                .breaker_until
                .get_or_insert(now + policy.breaker_cooldown);
            if now < until {
                return Decision::Skip(Skip::BreakerOpen(until));
            }
            // Half open: one more attempt; another failure opens it again at once.
            history.breaker_until = None;
            history.consecutive_failures = policy.breaker_failures - 1;
        }
        while history
            .attempts
            .front()
            .is_some_and(|at| elapsed(*at, now) >= policy.window)
        {
            history.attempts.pop_front();
        }
        let earlier = history.attempts.len() as u32;
        if earlier >= policy.max_attempts {
            return Decision::Skip(Skip::LimitReached);
        }
        let delay = pc_eventd_events::retry::delay(earlier + 1, policy.backoff, policy.max_backoff);
        Decision::Restart {
            attempt: earlier + 1,
            delay,
        }
    }

    /// Records what came of a restart decided for `key` at `at`.
    pub(crate) fn record(&mut self, key: &str, outcome: AttemptResult, at: SystemTime) {
        let history = self.attempts.entry(key.to_owned()).or_default();
        history.attempts.push_back(at);
        match outcome {
            AttemptResult::Restarted => history.unsettled = Some(at),
            AttemptResult::Failed => {
                history.unsettled = None;
                history.consecutive_failures += 1;
            }
        }
    }
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pc_eventd_events::event::{GivenUp, Pressure, example_event};
    use pc_eventd_events::process_compose::model::ProcessStatus;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn event(event_type: EventType, reason: Option<Reason>) -> LifecycleEvent {
        let mut event = example_event();
        event.event_type = event_type;
        event.reason = reason;
        event.state.pid = 41;
        event
    }

    const MIB: f64 = 1024.0 * 1024.0;

    fn pressure(resource: Resource, threshold: f64) -> LifecycleEvent {
        let mut event = event(EventType::ResourcePressure, None);
        event.pressure = Some(Pressure {
            resource,
            value: threshold * 2.0,
            threshold,
            for_seconds: 2,
        });
        event
    }

    fn given_up(policy: GivenUpPolicy) -> LifecycleEvent {
        let mut event = event(EventType::GivenUp, None);
        event.given_up = Some(GivenUp {
            policy,
            restarts: 3,
            max_restarts: Some(3),
        });
        event
    }

    fn triggers(on: &[EventType], pressure_resources: &[Resource]) -> Triggers {
        Triggers {
            on: on.to_vec(),
            pressure_resources: pressure_resources.to_vec(),
        }
    }

    fn current(status: ProcessStatus, pid: i64, ready: Readiness) -> ProcessState {
        ProcessState {
            name: "web".into(),
            status,
            pid,
            is_ready: ready,
            ..ProcessState::default()
        }
    }

    fn running_with(pid: i64, mem: i64, cpu: f64) -> ProcessState {
        ProcessState {
            mem,
            cpu,
            ..current(ProcessStatus::Running, pid, Readiness::Unknown)
        }
    }

    #[test]
    fn only_the_listed_types_are_triggers() {
        let on = triggers(&[EventType::Crashed], &[Resource::Memory]);
        assert_eq!(
            on.admit(&event(EventType::Crashed, Some(Reason::ExitedWithFailure))),
            Ok(())
        );
        assert_eq!(
            on.admit(&event(EventType::Unhealthy, Some(Reason::ReadinessLost))),
            Err(NotATrigger::NotOn)
        );
        assert_eq!(
            on.admit(&pressure(Resource::Memory, MIB)),
            Err(NotATrigger::NotOn)
        );
    }

    #[test]
    fn the_file_watchers_restarts_are_never_triggers() {
        // Even listed: a restart by the file watcher is neither a crash nor a fault.
        let on = triggers(
            &[EventType::Stopped, EventType::Restarted, EventType::Crashed],
            &[],
        );
        for event_type in [EventType::Stopped, EventType::Restarted, EventType::Crashed] {
            assert_eq!(
                on.admit(&event(event_type, Some(Reason::FileWatch))),
                Err(NotATrigger::FileWatch),
                "{event_type}"
            );
        }
        assert_eq!(
            on.admit(&event(EventType::Stopped, Some(Reason::StopRequested))),
            Ok(())
        );
        assert_eq!(
            on.admit(&event(EventType::Restarted, Some(Reason::ManualRestart))),
            Ok(())
        );
    }

    #[test]
    fn pressure_triggers_only_for_the_listed_resources() {
        let memory = triggers(&[EventType::ResourcePressure], &[Resource::Memory]);
        assert_eq!(memory.admit(&pressure(Resource::Memory, MIB)), Ok(()));
        assert_eq!(
            memory.admit(&pressure(Resource::Cpu, 90.0)),
            Err(NotATrigger::Resource)
        );
        let cpu = triggers(&[EventType::ResourcePressure], &[Resource::Cpu]);
        assert_eq!(cpu.admit(&pressure(Resource::Cpu, 90.0)), Ok(()));
        assert_eq!(
            cpu.admit(&pressure(Resource::Memory, MIB)),
            Err(NotATrigger::Resource)
        );
        // Without its reading it cannot say which resource: no trigger.
        let mut bare = pressure(Resource::Memory, MIB);
        bare.pressure = None;
        assert_eq!(memory.admit(&bare), Err(NotATrigger::Resource));
        // Its recovery is never one, even listed.
        let recovered = triggers(&[EventType::ResourcePressure], &[Resource::Memory]);
        let mut back = pressure(Resource::Memory, MIB);
        back.event_type = EventType::ResourceRecovered;
        assert_eq!(recovered.admit(&back), Err(NotATrigger::NotOn));
    }

    #[test]
    fn given_up_triggers_only_without_crashed_and_not_on_a_project_shutdown() {
        let alone = triggers(&[EventType::GivenUp], &[]);
        assert_eq!(alone.admit(&given_up(GivenUpPolicy::MaxRestarts)), Ok(()));
        assert_eq!(alone.admit(&given_up(GivenUpPolicy::No)), Ok(()));
        assert_eq!(
            alone.admit(&given_up(GivenUpPolicy::ExitOnFailure)),
            Err(NotATrigger::ProjectShutdown)
        );
        // The crash just before it was the trigger: one decision per run, not two.
        let with_crashes = triggers(&[EventType::Crashed, EventType::GivenUp], &[]);
        assert_eq!(
            with_crashes.admit(&given_up(GivenUpPolicy::MaxRestarts)),
            Err(NotATrigger::CrashWasTheTrigger)
        );
    }

    #[test]
    fn a_process_that_runs_again_is_left_alone() {
        let crashed = event(EventType::Crashed, Some(Reason::ExitedWithFailure));
        assert!(!recovered(
            &crashed,
            &current(ProcessStatus::Completed, 41, Readiness::Unknown)
        ));
        assert!(!recovered(
            &crashed,
            &current(ProcessStatus::Error, 0, Readiness::Unknown)
        ));
        assert!(recovered(
            &crashed,
            &current(ProcessStatus::Running, 42, Readiness::Unknown)
        ));
        assert!(
            recovered(
                &crashed,
                &current(ProcessStatus::Restarting, 41, Readiness::Unknown)
            ),
            "its own restart policy is on it"
        );

        let unhealthy = event(EventType::Unhealthy, Some(Reason::ReadinessLost));
        assert!(!recovered(
            &unhealthy,
            &current(ProcessStatus::Running, 41, Readiness::NotReady)
        ));
        assert!(recovered(
            &unhealthy,
            &current(ProcessStatus::Running, 41, Readiness::Ready)
        ));
        assert!(recovered(
            &unhealthy,
            &current(ProcessStatus::Running, 42, Readiness::NotReady)
        ));

        let given_up = given_up(GivenUpPolicy::MaxRestarts);
        assert!(!recovered(
            &given_up,
            &current(ProcessStatus::Error, 41, Readiness::Unknown)
        ));
        assert!(recovered(
            &given_up,
            &current(ProcessStatus::Running, 42, Readiness::Unknown)
        ));
    }

    #[test]
    fn pressure_is_over_with_its_run_or_its_reading() {
        let memory = pressure(Resource::Memory, 64.0 * MIB);
        let (over, under) = ((100.0 * MIB) as i64, (10.0 * MIB) as i64);
        assert!(!recovered(&memory, &running_with(41, over, 0.0)));
        assert!(
            !recovered(&memory, &running_with(41, 0, 0.0)),
            "no reading: the daemon's word stands"
        );
        assert!(recovered(&memory, &running_with(41, under, 0.0)));
        assert!(
            recovered(&memory, &running_with(42, over, 0.0)),
            "another run: somebody restarted it"
        );
        for status in [
            ProcessStatus::Completed,
            ProcessStatus::Error,
            ProcessStatus::Restarting,
            ProcessStatus::Terminating,
        ] {
            let ended = ProcessState {
                mem: over,
                ..current(status.clone(), 41, Readiness::Unknown)
            };
            assert!(recovered(&memory, &ended), "{status:?}");
        }
        // CPU pressure reads the CPU.
        let cpu = pressure(Resource::Cpu, 80.0);
        assert!(!recovered(&cpu, &running_with(41, under, 95.0)));
        assert!(recovered(&cpu, &running_with(41, over, 5.0)));
    }

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    fn restart(planner: &mut Planner, policy: &Policy, now: SystemTime) -> Decision {
        let decision = planner.decide("default/web", policy, now);
        if let Decision::Restart { .. } = decision {
            planner.record("default/web", AttemptResult::Restarted, now);
        }
        decision
    }

    #[test]
    fn deny_wins_over_allow_and_the_first_rule_applies() {
        let strict = Policy {
            max_attempts: 1,
            ..Policy::default()
        };
        let policies = Policies {
            allow: vec!["shop/*".into(), "worker-?".into()],
            deny: vec!["shop/db".into()],
            rules: vec![Rule {
                pattern: "web*".into(),
                policy: strict.clone(),
            }],
            default: Policy::default(),
        };
        assert_eq!(policies.for_process("shop", "db"), Err(Skip::Denied));
        assert_eq!(policies.for_process("ops", "cron"), Err(Skip::NotAllowed));
        assert_eq!(policies.for_process("shop", "web-1"), Ok(&strict));
        assert_eq!(
            policies.for_process("ops", "worker-3"),
            Ok(&Policy::default())
        );
    }

    #[test]
    fn attempts_are_limited_per_window_with_growing_backoff() {
        let policy = Policy {
            max_attempts: 3,
            window: Duration::from_secs(600),
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
            settle_time: Duration::ZERO,
            breaker_failures: 0,
            ..Policy::default()
        };
        let mut planner = Planner::default();
        let delays: Vec<_> = (0..4)
            .map(|i| restart(&mut planner, &policy, at(i * 100)))
            .collect();
        assert_eq!(
            delays,
            [
                Decision::Restart {
                    attempt: 1,
                    delay: Duration::from_secs(2)
                },
                Decision::Restart {
                    attempt: 2,
                    delay: Duration::from_secs(4)
                },
                Decision::Restart {
                    attempt: 3,
                    delay: Duration::from_secs(5)
                },
                Decision::Skip(Skip::LimitReached),
            ]
        );
        // The first attempt leaves the window: one more is allowed.
        assert!(matches!(
            restart(&mut planner, &policy, at(601)),
            Decision::Restart { attempt: 3, .. }
        ));
    }

    #[test]
    fn restarts_that_do_not_settle_open_the_breaker_until_the_cooldown() {
        let policy = Policy {
            max_attempts: 100,
            settle_time: Duration::from_secs(60),
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(300),
            ..Policy::default()
        };
        let mut planner = Planner::default();
        assert!(matches!(
            restart(&mut planner, &policy, at(0)),
            Decision::Restart { .. }
        ));
        // crashed again 10 s later: failure 1
        assert!(matches!(
            restart(&mut planner, &policy, at(10)),
            Decision::Restart { .. }
        ));
        // and again: failure 2 opens the breaker
        let until = at(20) + Duration::from_secs(300);
        assert_eq!(
            restart(&mut planner, &policy, at(20)),
            Decision::Skip(Skip::BreakerOpen(until))
        );
        assert_eq!(
            restart(&mut planner, &policy, at(200)),
            Decision::Skip(Skip::BreakerOpen(until))
        );
        // after the cooldown: one attempt; failing again reopens it at once
        assert!(matches!(
            restart(&mut planner, &policy, at(330)),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            restart(&mut planner, &policy, at(340)),
            Decision::Skip(Skip::BreakerOpen(_))
        ));
    }

    #[test]
    fn skips_have_their_names_on_the_wire() {
        assert_eq!(Skip::Denied.as_str(), "denied");
        assert_eq!(Skip::NotAllowed.as_str(), "not_allowed");
        assert_eq!(Skip::LimitReached.as_str(), "limit_reached");
        assert_eq!(Skip::BreakerOpen(at(1)).as_str(), "breaker_open");
    }

    #[test]
    fn the_settle_time_and_the_cooldown_end_on_the_second() {
        let policy = Policy {
            max_attempts: 100,
            settle_time: Duration::from_secs(60),
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(300),
            ..Policy::default()
        };
        // a trigger exactly settle_time after our restart: that restart had settled
        let mut planner = Planner::default();
        restart(&mut planner, &policy, at(0));
        assert!(matches!(
            restart(&mut planner, &policy, at(60)),
            Decision::Restart { .. }
        ));
        // one that did not settle opens the breaker, and it closes exactly at its end
        let until = at(70) + Duration::from_secs(300);
        assert_eq!(
            restart(&mut planner, &policy, at(70)),
            Decision::Skip(Skip::BreakerOpen(until))
        );
        assert!(matches!(
            restart(&mut planner, &policy, until),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn a_restart_that_settles_resets_the_failures_and_refused_ones_count() {
        let policy = Policy {
            max_attempts: 100,
            settle_time: Duration::from_secs(60),
            breaker_failures: 2,
            ..Policy::default()
        };
        let mut planner = Planner::default();
        restart(&mut planner, &policy, at(0));
        restart(&mut planner, &policy, at(10)); // failure 1
        restart(&mut planner, &policy, at(500)); // the one at 10 settled: reset
        assert!(matches!(
            restart(&mut planner, &policy, at(1000)),
            Decision::Restart { .. }
        ));
        // Two refused restarts in a row open it too.
        let mut planner = Planner::default();
        for now in [at(0), at(1000)] {
            assert!(matches!(
                planner.decide("default/web", &policy, now),
                Decision::Restart { .. }
            ));
            planner.record("default/web", AttemptResult::Failed, now);
        }
        assert!(matches!(
            planner.decide("default/web", &policy, at(2000)),
            Decision::Skip(Skip::BreakerOpen(_))
        ));
    }
}
