//! A process's mutable state and its JSON form (`ProcessState` of
//! process-compose v1.122.0, keys in the same order).

use std::time::{Duration, Instant};

use chrono::{DateTime, Local, Timelike};
use serde::Serialize;

use crate::project::ProcessConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Pending,
    Disabled,
    Running,
    Restarting,
    Terminating,
    Completed,
    Error,
}

impl Status {
    /// process-compose's `isRunning()`: Running, Launching or Launched (the
    /// emulator has no daemons, so only Running).
    pub fn is_running(self) -> bool {
        self == Status::Running
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Health {
    #[serde(rename = "Ready")]
    Ready,
    #[serde(rename = "Not Ready")]
    NotReady,
    #[serde(rename = "-")]
    Unknown,
}

/// What the supervisor and the probe task update, always under the process's mutex.
#[derive(Debug, Clone)]
pub struct State {
    pub status: Status,
    pub health: Health,
    pub restarts: u32,
    pub exit_code: i32,
    pub pid: u32,
    /// Bumped at every spawn, so a stale probe task can tell its run is over.
    pub run_id: u64,
    /// When the current child was spawned (policy restarts reset it: `age`).
    pub run_started: Option<Instant>,
    /// When the current child exited; freezes `age` afterwards.
    pub run_ended: Option<Instant>,
    pub start_time: Option<DateTime<Local>>,
    pub ready_time: Option<DateTime<Local>>,
    pub end_time: Option<DateTime<Local>>,
}

impl State {
    pub fn new(disabled: bool) -> Self {
        Self {
            status: if disabled {
                Status::Disabled
            } else {
                Status::Pending
            },
            health: Health::Unknown,
            restarts: 0,
            exit_code: 0,
            pid: 0,
            run_id: 0,
            run_started: None,
            run_ended: None,
            start_time: None,
            ready_time: None,
            end_time: None,
        }
    }

    fn age(&self) -> Duration {
        match self.run_started {
            Some(start) => self
                .run_ended
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(start),
            None => Duration::ZERO,
        }
    }

    pub fn to_json(&self, name: &str, cfg: &ProcessConfig) -> ProcessStateJson {
        let age = self.age();
        ProcessStateJson {
            name: name.to_owned(),
            namespace: cfg.namespace().to_owned(),
            status: self.status,
            system_time: if self.run_started.is_some() {
                human_duration(age)
            } else {
                "-".to_owned()
            },
            age: i64::try_from(age.as_nanos()).unwrap_or(i64::MAX),
            is_ready: self.health,
            has_ready_probe: cfg.has_ready_probe(),
            restarts: self.restarts,
            exit_code: self.exit_code,
            success_exit_codes: cfg.success_exit_codes.clone(),
            pid: self.pid,
            is_elevated: false,
            password_provided: false,
            mem: 0,
            cpu: 0,
            is_running: self.status.is_running(),
            process_start_time: self.start_time.as_ref().map(rfc3339_nano),
            process_ready_time: self.ready_time.as_ref().map(rfc3339_nano),
            process_end_time: self.end_time.as_ref().map(rfc3339_nano),
        }
    }
}

/// The wire form. Field order is the JSON key order.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStateJson {
    pub name: String,
    pub namespace: String,
    pub status: Status,
    pub system_time: String,
    pub age: i64,
    pub is_ready: Health,
    pub has_ready_probe: bool,
    pub restarts: u32,
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub success_exit_codes: Vec<i32>,
    pub pid: u32,
    pub is_elevated: bool,
    pub password_provided: bool,
    pub mem: i64,
    /// A float64 in process-compose; always 0 here, written as `0` like Go does.
    pub cpu: i64,
    pub is_running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_ready_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_end_time: Option<String>,
}

/// Go's `time.RFC3339Nano`: trailing zeros of the fraction trimmed, `Z` for UTC.
pub fn rfc3339_nano(t: &DateTime<Local>) -> String {
    let mut out = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset().local_minus_utc();
    if offset == 0 {
        out.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        out.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60));
    }
    out
}

/// The `system_time` text: Kubernetes' `HumanDuration`, which process-compose uses
/// ("45s", "2m13s", "15m", "3h", "5h7m", "2d3h", …).
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, TimeZone};

    #[test]
    fn human_duration_matches_the_kubernetes_helper() {
        let s = Duration::from_secs;
        assert_eq!(human_duration(Duration::from_millis(300)), "0s");
        assert_eq!(human_duration(s(45)), "45s");
        assert_eq!(human_duration(s(119)), "119s");
        assert_eq!(human_duration(s(133)), "2m13s");
        assert_eq!(human_duration(s(180)), "3m");
        assert_eq!(human_duration(s(15 * 60)), "15m");
        assert_eq!(human_duration(s(3 * 3600)), "3h");
        assert_eq!(human_duration(s(5 * 3600 + 7 * 60)), "5h7m");
        assert_eq!(human_duration(s(20 * 3600)), "20h");
        assert_eq!(human_duration(s(51 * 3600)), "2d3h");
    }

    #[test]
    fn rfc3339_nano_trims_like_go() {
        let tz = FixedOffset::east_opt(3 * 3600).unwrap();
        let t = tz
            .with_ymd_and_hms(2026, 8, 20, 14, 2, 8)
            .unwrap()
            .with_nanosecond(420_771_900)
            .unwrap()
            .with_timezone(&Local);
        let text = rfc3339_nano(&t);
        let back = DateTime::parse_from_rfc3339(&text).unwrap();
        assert_eq!(back, t);
        assert!(text.contains(".4207719"), "{text}");
        assert!(!text.contains(".42077190"), "{text}");
    }

    #[test]
    fn json_keys_are_in_process_compose_order() {
        let cfg = ProcessConfig {
            command: "true".into(),
            ..Default::default()
        };
        let json = serde_json::to_string(&State::new(true).to_json("docs", &cfg)).unwrap();
        assert_eq!(
            json,
            r#"{"name":"docs","namespace":"default","status":"Disabled","system_time":"-","age":0,"is_ready":"-","has_ready_probe":false,"restarts":0,"exit_code":0,"pid":0,"is_elevated":false,"password_provided":false,"mem":0,"cpu":0,"is_running":false}"#
        );
    }
}
