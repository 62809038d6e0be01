//! Each process's settings that change how its states read, learned from process-compose:
//! how long its runs may take to become ready, how long a manual restart pauses, when its
//! restart policy gives up, how long it may be silent; and the configured condition rules.

use std::collections::BTreeMap;
use std::time::Duration;

use pc_eventd_events::event::GivenUpPolicy;
use pc_eventd_events::process_compose::model::{ProcessInfo, RestartPolicy, restart};

use super::conditions::ConditionRules;

/// What pc-eventd knows of each process's settings: how long a run may stay not Ready before
/// it is `unhealthy` (`never_ready`), how long process-compose pauses between the two halves
/// of a manual restart, which policy ends its restarts, and its silence threshold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSettings {
    /// One readiness grace for every process (the configuration's `readiness_grace`), over the
    /// rest.
    pub fixed_readiness_grace: Option<Duration>,
    /// From each process's readiness probe; others get [`DEFAULT_READINESS_GRACE`].
    pub readiness_grace: BTreeMap<String, Duration>,
    /// Each process's restart policy, once read; until then the backoff is process-compose's
    /// 1 s and nothing is said to have given up.
    pub restart_policy: BTreeMap<String, RestartPolicy>,
    /// The silence threshold of each process that sets `monitor_for: silence`.
    pub monitor_silence: BTreeMap<String, Duration>,
    /// The configured resource and silence rules.
    pub conditions: ConditionRules,
}

/// process-compose's TUI calls a `monitor_for: silence` process silent after this long when it
/// sets no `monitor_silence_threshold`.
const DEFAULT_MONITOR_SILENCE: Duration = Duration::from_secs(5);

impl ProcessSettings {
    /// One readiness grace for every process.
    pub fn fixed(grace: Duration) -> Self {
        Self {
            fixed_readiness_grace: Some(grace),
            ..Self::default()
        }
    }

    /// Whether `name`'s settings were read.
    pub fn knows(&self, name: &str) -> bool {
        self.restart_policy.contains_key(name)
    }

    /// Takes what `info` (process-compose's settings of `name`) says.
    pub fn learn(&mut self, name: &str, info: ProcessInfo) {
        let grace = info
            .readiness_probe
            .map_or(DEFAULT_READINESS_GRACE, |p| p.readiness_grace());
        self.readiness_grace.insert(name.to_owned(), grace);
        if info.monitor_for == pc_eventd_events::process_compose::model::MONITOR_FOR_SILENCE {
            let threshold = match info.monitor_silence_threshold_ns {
                0 => DEFAULT_MONITOR_SILENCE,
                ns => Duration::from_nanos(ns),
            };
            self.monitor_silence.insert(name.to_owned(), threshold);
        } else {
            self.monitor_silence.remove(name);
        }
        self.restart_policy
            .insert(name.to_owned(), info.restart_policy);
    }

    pub fn readiness_grace_of(&self, name: &str) -> Duration {
        self.fixed_readiness_grace
            .or_else(|| self.readiness_grace.get(name).copied())
            .unwrap_or(DEFAULT_READINESS_GRACE)
    }

    /// How soon after a stop a new incarnation must start to be read as a manual restart:
    /// process-compose sleeps the backoff (at least 1 s) between the two, and the launch takes
    /// a moment more. A later start is an operator's start after a stop.
    pub fn manual_restart_window(&self, name: &str) -> Duration {
        let backoff = self
            .restart_policy
            .get(name)
            .map_or(Duration::ZERO, |p| Duration::from_secs(p.backoff_seconds));
        backoff.max(MIN_RESTART_BACKOFF) + MANUAL_RESTART_SLACK
    }

    /// Which policy stops `name`'s restarts after a failed run with `restarts` policy restarts
    /// made, or `None` when its policy would have restarted it (so the run that ended was
    /// stopped, not given up on: a stop a poll did not see) or is not known (its settings
    /// could not be read: pc-eventd does not guess).
    pub fn gives_up(&self, name: &str, restarts: u32) -> Option<(GivenUpPolicy, Option<u32>)> {
        let policy = self.restart_policy.get(name)?;
        match policy.restart {
            restart::NO => Some((GivenUpPolicy::No, None)),
            restart::EXIT_ON_FAILURE => Some((GivenUpPolicy::ExitOnFailure, None)),
            restart::ALWAYS | restart::ON_FAILURE
                if policy.max_restarts > 0 && restarts >= policy.max_restarts =>
            {
                Some((GivenUpPolicy::MaxRestarts, Some(policy.max_restarts)))
            }
            _ => None,
        }
    }

    /// How long `namespace/name` may print nothing: its own `monitor_for: silence` threshold,
    /// else the first configured silence rule that selects it.
    pub fn silence_threshold(&self, namespace: &str, name: &str) -> Option<Duration> {
        self.monitor_silence
            .get(name)
            .copied()
            .or_else(|| self.conditions.silence_after(namespace, name))
    }
}

/// process-compose never sleeps less than this between a restart's stop and start.
pub(super) const MIN_RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// The launch of a restarted process after its backoff, with room to spare.
pub(super) const MANUAL_RESTART_SLACK: Duration = Duration::from_secs(1);

/// The readiness grace where neither the configuration nor the process's probe gives one.
const DEFAULT_READINESS_GRACE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restart: u8, max_restarts: u32) -> ProcessInfo {
        ProcessInfo {
            restart_policy: RestartPolicy {
                restart,
                max_restarts,
                backoff_seconds: 0,
            },
            ..ProcessInfo::default()
        }
    }

    #[test]
    fn the_policy_names_who_gave_up() {
        let mut settings = ProcessSettings::default();
        assert!(!settings.knows("no"));
        assert_eq!(settings.gives_up("a", 0), None, "not known");
        settings.learn("no", policy(restart::NO, 0));
        assert!(settings.knows("no"));
        assert!(!settings.knows("exit"));
        settings.learn("exit", policy(restart::EXIT_ON_FAILURE, 0));
        settings.learn("max", policy(restart::ON_FAILURE, 2));
        settings.learn("always", policy(restart::ALWAYS, 0));
        assert_eq!(settings.gives_up("no", 0), Some((GivenUpPolicy::No, None)));
        assert_eq!(
            settings.gives_up("exit", 0),
            Some((GivenUpPolicy::ExitOnFailure, None))
        );
        assert_eq!(settings.gives_up("max", 1), None, "one restart left");
        assert_eq!(
            settings.gives_up("max", 2),
            Some((GivenUpPolicy::MaxRestarts, Some(2)))
        );
        assert_eq!(settings.gives_up("always", 40), None, "no limit: a stop");
        settings.learn("odd", policy(9, 0));
        assert_eq!(
            settings.gives_up("odd", 0),
            None,
            "a policy of a newer release"
        );
    }

    #[test]
    fn monitor_for_silence_sets_a_threshold_over_the_rules() {
        let mut settings = ProcessSettings::default();
        let mut info = ProcessInfo {
            monitor_for: pc_eventd_events::process_compose::model::MONITOR_FOR_SILENCE,
            ..ProcessInfo::default()
        };
        settings.learn("quiet", info.clone());
        assert_eq!(
            settings.silence_threshold("default", "quiet"),
            Some(Duration::from_secs(5))
        );
        info.monitor_silence_threshold_ns = 90_000_000_000;
        settings.learn("quiet", info);
        assert_eq!(
            settings.silence_threshold("default", "quiet"),
            Some(Duration::from_secs(90))
        );
        settings.learn("quiet", ProcessInfo::default());
        assert_eq!(settings.silence_threshold("default", "quiet"), None);
    }

    #[test]
    fn the_backoff_widens_the_manual_restart_window() {
        let mut settings = ProcessSettings::default();
        assert_eq!(settings.manual_restart_window("a"), Duration::from_secs(2));
        let mut info = policy(restart::NO, 0);
        info.restart_policy.backoff_seconds = 5;
        settings.learn("a", info);
        assert_eq!(settings.manual_restart_window("a"), Duration::from_secs(6));
    }
}
