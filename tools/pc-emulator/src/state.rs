//! A process's mutable state and its JSON forms: `ProcessState` of
//! process-compose v1.122.0 (keys in the same order) for REST and snapshots,
//! and the same struct with process-compose's stale fields for live
//! WebSocket frames (`ProcessStateEvent`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Local, Timelike};
use serde::Serialize;

use crate::project::ProcessConfig;
use crate::version::Version;

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
    /// When the child last wrote a line of output (`last_activity_time`).
    pub last_activity: Option<DateTime<Local>>,
    /// What the last REST poll or snapshot computed (see [`Polled`]).
    pub polled: Polled,
}

/// The fields process-compose refreshes only when the state is polled
/// (`updateProcState`, run by `GET /processes`, `GET /process/{name}` and
/// the stream's snapshot). Live frames carry these last computed values, so
/// they are stale; `mem` and `cpu` are always 0 in the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polled {
    pub is_running: bool,
    pub age: i64,
    pub system_time: String,
}

impl Default for Polled {
    fn default() -> Self {
        Self {
            is_running: false,
            age: 0,
            system_time: "-".to_owned(),
        }
    }
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
            last_activity: None,
            polled: Polled::default(),
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

    /// The REST (and snapshot) form, with `is_running`, `age` and
    /// `system_time` computed now; remembers them for later live frames.
    pub fn poll_json(
        &mut self,
        name: &str,
        cfg: &ProcessConfig,
        version: Version,
    ) -> ProcessStateJson {
        let age = self.age();
        let json = self.json_with(
            name,
            cfg,
            version,
            Polled {
                is_running: self.status.is_running(),
                age: i64::try_from(age.as_nanos()).unwrap_or(i64::MAX),
                system_time: if self.run_started.is_some() {
                    human_duration(age)
                } else {
                    "-".to_owned()
                },
            },
        );
        self.polled = Polled {
            is_running: json.is_running,
            age: json.age,
            system_time: json.system_time.clone(),
        };
        json
    }

    /// The form of a live WebSocket frame: the current status, health,
    /// counters and times, but `is_running`, `age` and `system_time` as last
    /// polled (process-compose publishes its stored struct without refreshing it).
    pub fn live_json(&self, name: &str, cfg: &ProcessConfig, version: Version) -> ProcessStateJson {
        self.json_with(name, cfg, version, self.polled.clone())
    }

    fn json_with(
        &self,
        name: &str,
        cfg: &ProcessConfig,
        version: Version,
        polled: Polled,
    ) -> ProcessStateJson {
        let times = version.has_process_times();
        let time = |t: &Option<DateTime<Local>>| t.as_ref().filter(|_| times).map(rfc3339_nano);
        ProcessStateJson {
            name: name.to_owned(),
            namespace: cfg.namespace().to_owned(),
            status: self.status,
            system_time: polled.system_time,
            age: polled.age,
            is_ready: self.health,
            has_ready_probe: cfg.has_ready_probe(),
            restarts: self.restarts,
            exit_code: self.exit_code,
            success_exit_codes: if version.has_success_exit_codes() {
                cfg.success_exit_codes.clone()
            } else {
                Vec::new()
            },
            pid: self.pid,
            is_elevated: false,
            password_provided: false,
            mem: 0,
            cpu: 0,
            is_running: polled.is_running,
            last_activity_time: time(&self.last_activity),
            process_start_time: time(&self.start_time),
            process_ready_time: time(&self.ready_time),
            process_end_time: time(&self.end_time),
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
    pub last_activity_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_ready_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_end_time: Option<String>,
}

/// One WebSocket frame of `/process/states/ws` (process-compose's
/// `ProcessStateEvent`, written by Go's `json.Encoder`: the object and `\n`).
/// `snapshot` is `omitempty`, so live frames have no such key.
pub fn encode_event(snapshot: bool, state: &ProcessStateJson) -> Bytes {
    #[derive(Serialize)]
    struct ProcessStateEvent<'a> {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        snapshot: bool,
        state: &'a ProcessStateJson,
    }
    let mut out = serde_json::to_vec(&ProcessStateEvent { snapshot, state })
        .expect("a ProcessState always serializes");
    out.push(b'\n');
    Bytes::from(out)
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
        let json =
            serde_json::to_string(&State::new(true).poll_json("docs", &cfg, Version::DEFAULT))
                .unwrap();
        assert_eq!(
            json,
            r#"{"name":"docs","namespace":"default","status":"Disabled","system_time":"-","age":0,"is_ready":"-","has_ready_probe":false,"restarts":0,"exit_code":0,"pid":0,"is_elevated":false,"password_provided":false,"mem":0,"cpu":0,"is_running":false}"#
        );
    }

    #[test]
    fn live_frames_carry_the_last_polled_values() {
        let cfg = ProcessConfig {
            command: "true".into(),
            ..Default::default()
        };
        let mut st = State::new(false);
        st.status = Status::Running;
        st.pid = 42;
        st.run_started = Some(Instant::now() - Duration::from_secs(5));
        st.start_time = Some(Local::now());
        st.last_activity = st.start_time;

        // Never polled: process-compose's fresh struct (not running, no age).
        let live = st.live_json("web", &cfg, Version::DEFAULT);
        assert_eq!(
            (live.is_running, live.age, live.system_time.as_str()),
            (false, 0, "-")
        );

        let rest = st.poll_json("web", &cfg, Version::DEFAULT);
        assert!(rest.is_running && rest.age >= 5_000_000_000);
        assert_eq!(rest.system_time, "5s");

        st.status = Status::Terminating;
        let live = st.live_json("web", &cfg, Version::DEFAULT);
        assert_eq!(live.status, Status::Terminating);
        assert_eq!(
            (live.is_running, live.age, live.system_time.as_str()),
            (true, rest.age, "5s"),
            "stale, as last polled"
        );

        let json = serde_json::to_string(&live).unwrap();
        let order = [
            "\"is_running\"",
            "\"last_activity_time\"",
            "\"process_start_time\"",
        ];
        let at: Vec<usize> = order.iter().map(|k| json.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");

        let event = encode_event(false, &live);
        assert!(event.starts_with(b"{\"state\":{\"name\":\"web\""));
        assert!(event.ends_with(b"}}\n"));
        let event = encode_event(true, &live);
        assert!(event.starts_with(b"{\"snapshot\":true,\"state\":{"));
    }
}
