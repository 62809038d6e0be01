//! Talking to systemd: readiness, status, reload and stop notifications, and the watchdog.
//!
//! Every call is a no-op without `NOTIFY_SOCKET` (not under systemd), and failures to notify are
//! logged, never fatal: the daemon's job is the events.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// `READY=1` with a status line.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=…`
pub(crate) fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` requires (and `Type=notify`
/// ignores harmlessly).
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the monotonic clock");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// `STOPPING=1`
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pets systemd's watchdog, but only from the event loop itself: the loop calls
/// [`Watchdog::pet`] after each step and sleeps through [`Watchdog::sleep`], so pings stop as
/// soon as the loop is stuck anywhere else.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// Half of `WATCHDOG_USEC`, or `None` when systemd asked for no watchdog.
    interval: Option<Duration>,
    last: Mutex<Option<Instant>>,
}

impl Watchdog {
    pub(crate) fn from_env() -> Self {
        Self {
            interval: sd_notify::watchdog_enabled().map(|timeout| timeout / 2),
            last: Mutex::new(None),
        }
    }

    pub(crate) fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Sends `WATCHDOG=1` if half the watchdog timeout has passed since the last one.
    pub(crate) fn pet(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let mut last = crate::sync::lock(&self.last);
        if last.is_none_or(|at| at.elapsed() >= interval) {
            send(&[NotifyState::Watchdog]);
            *last = Some(Instant::now());
        }
    }

    /// Sleeps for `duration`, petting the watchdog on the way.
    pub(crate) async fn sleep(&self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            self.pet();
            let step = self.interval.unwrap_or(duration);
            let wake = (tokio::time::Instant::now() + step).min(deadline);
            tokio::time::sleep_until(wake).await;
            if wake >= deadline {
                self.pet();
                return;
            }
        }
    }
}
