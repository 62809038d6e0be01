//! Readiness probes (`exec` only).
//!
//! One task per run of a child. After `initial_delay_seconds` it runs the check
//! every `period_seconds`: `success_threshold` successes in a row set "Ready",
//! every failure sets "Not Ready" at once, and `failure_threshold` failures in a
//! row ask the supervisor to stop the child (its restart policy then applies).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::project::Probe;
use crate::state::Health;
use crate::supervisor::{Proc, signal_group};

/// Aborts the probe task (and kills a check in flight) when dropped.
pub struct ProbeTask(JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the probe for run `run_id` of `proc`, or returns `None` when it is
/// not an `exec` probe.
pub fn spawn(
    proc: Arc<Proc>,
    run_id: u64,
    probe: &Probe,
    fatal: mpsc::Sender<()>,
) -> Option<ProbeTask> {
    // Other probe kinds (http_get) are reported once at startup by `main`.
    let exec = probe.exec.clone()?;
    let probe = probe.clone();
    Some(ProbeTask(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(probe.initial_delay_seconds)).await;
        let mut ticker = tokio::time::interval(Duration::from_secs(probe.period_seconds.max(1)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let timeout = Duration::from_secs(probe.timeout_seconds.max(1));
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            ticker.tick().await;
            if check(&proc, &exec.command, exec.working_dir.as_deref(), timeout).await {
                failures = 0;
                successes += 1;
                if successes >= probe.success_threshold.max(1) {
                    proc.set_health(run_id, Health::Ready);
                }
            } else {
                successes = 0;
                failures += 1;
                proc.set_health(run_id, Health::NotReady);
                if failures >= probe.failure_threshold.max(1) {
                    let _ = fatal.send(()).await;
                    return;
                }
            }
        }
    })))
}

/// Runs the check command once; true on exit code 0 within `timeout`.
async fn check(
    proc: &Proc,
    script: &str,
    dir: Option<&std::path::Path>,
    timeout: Duration,
) -> bool {
    let mut cmd = proc.command(script);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        Ok(Err(_)) => false,
        Err(_) => {
            if let Some(pid) = child.id() {
                signal_group(pid, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            false
        }
    }
}
