//! Each process's timings, learned from its settings: how long its runs may take to become
//! ready, and how long a manual restart pauses.

use std::collections::BTreeMap;
use std::time::Duration;

/// What pc-eventd knows of each process's settings that changes how its states read: how long
/// a run may stay not Ready before it is `unhealthy` (`never_ready`), and how long
/// process-compose pauses between the two halves of a manual restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessTimings {
    /// One readiness grace for every process (the configuration's `readiness_grace`), over the
    /// rest.
    pub fixed_readiness_grace: Option<Duration>,
    /// From each process's readiness probe; others get [`DEFAULT_READINESS_GRACE`].
    pub readiness_grace: BTreeMap<String, Duration>,
    /// Each process's `backoff_seconds`; others get process-compose's 1 s.
    pub restart_backoff: BTreeMap<String, Duration>,
}

impl ProcessTimings {
    /// One readiness grace for every process.
    pub fn fixed(grace: Duration) -> Self {
        Self {
            fixed_readiness_grace: Some(grace),
            ..Self::default()
        }
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
        let backoff = self.restart_backoff.get(name).copied().unwrap_or_default();
        backoff.max(MIN_RESTART_BACKOFF) + MANUAL_RESTART_SLACK
    }
}

/// process-compose never sleeps less than this between a restart's stop and start.
pub(super) const MIN_RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// The launch of a restarted process after its backoff, with room to spare.
pub(super) const MANUAL_RESTART_SLACK: Duration = Duration::from_secs(1);

/// The readiness grace where neither the configuration nor the process's probe gives one.
pub(crate) const DEFAULT_READINESS_GRACE: Duration = Duration::from_secs(60);
