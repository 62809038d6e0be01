//! process-compose's view of a process, as its API sends it.
//!
//! Every field is optional and unknown fields are ignored: the API has grown fields release by
//! release (see the reference notes), and a daemon that rejects a document because one field is
//! new or missing would go blind on an upgrade.

use serde::{Deserialize, Serialize};

/// One process as returned by `GET /processes` and by the state stream. (Serialized only for
/// pc-eventd's own state store: the fields it keeps, in process-compose's shapes.)
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ProcessState {
    /// The process's name in the project.
    pub name: String,
    /// Its namespace or namespaces.
    pub namespace: Namespaces,
    /// Its status.
    pub status: ProcessStatus,
    /// What its readiness probe says.
    pub is_ready: Readiness,
    /// Whether it has a readiness probe.
    pub has_ready_probe: bool,
    /// Policy restarts of the current incarnation.
    pub restarts: u32,
    /// The last run's exit code.
    pub exit_code: i32,
    /// Exit codes that count as success besides 0 (process-compose v1.116.0+).
    pub success_exit_codes: Vec<i32>,
    /// The running process's pid (0 when none runs).
    pub pid: i64,
    /// Set once per incarnation (v1.110.0+); policy restarts keep it, a manual restart changes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_start_time: Option<String>,
    /// When the file watcher last restarted it (v1.122.0+, REST only: stream frames leave it
    /// out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_trigger_time: Option<String>,
    /// Resident memory in bytes; not positive when there is no reading (`-1` for daemons, `0`
    /// before the first sample). Fresh only in `GET /processes`.
    #[serde(skip_serializing)]
    pub mem: i64,
    /// CPU use in percent of one core. Fresh only in `GET /processes`.
    #[serde(skip_serializing)]
    pub cpu: f64,
    /// When the process last printed (v1.110.0+). Fresh only in `GET /processes`.
    #[serde(skip_serializing)]
    pub last_activity_time: Option<String>,
}

/// The body of `GET /process/logs/{name}/{endOffset}/{limit}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogLines {
    /// The lines, oldest first.
    #[serde(default)]
    pub logs: Vec<String>,
}

/// The body of `GET /processes`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessesResponse {
    /// The processes.
    #[serde(default)]
    pub data: Vec<ProcessState>,
}

/// The part of `GET /process/info/{name}` (the process's configuration) that pc-eventd reads:
/// camelCase keys since v1.110.0, Go field names before.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessInfo {
    /// The readiness probe, if the process has one.
    #[serde(default, rename = "readinessProbe", alias = "ReadinessProbe")]
    pub readiness_probe: Option<ProbeSettings>,
    /// When process-compose restarts it.
    #[serde(default, rename = "restartPolicy", alias = "RestartPolicy")]
    pub restart_policy: RestartPolicy,
    /// What the TUI watches the output for: 0 nothing, 1 activity, 2 silence (v1.110.0+).
    #[serde(default, rename = "monitorFor", alias = "MonitorFor")]
    pub monitor_for: u8,
    /// With `monitor_for: silence`: how long a quiet process is silent, in nanoseconds (0: the
    /// TUI's default of 5 s).
    #[serde(
        default,
        rename = "monitorSilenceThreshold",
        alias = "MonitorSilenceThreshold"
    )]
    pub monitor_silence_threshold_ns: u64,
}

/// `monitor_for: silence` in [`ProcessInfo::monitor_for`].
pub const MONITOR_FOR_SILENCE: u8 = 2;

/// The part of a process's restart policy that pc-eventd reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// The pause before a restart, policy or manual (process-compose sleeps at least 1 s).
    #[serde(rename = "backoffSeconds", alias = "BackoffSeconds")]
    pub backoff_seconds: u64,
    /// `restart`: 0 no (the default, omitted), 1 always, 2 on_failure, 3 exit_on_failure.
    #[serde(rename = "restart", alias = "Restart")]
    pub restart: u8,
    /// `max_restarts`: 0 is no limit.
    #[serde(rename = "maxRestarts", alias = "MaxRestarts")]
    pub max_restarts: u32,
}

/// The values of [`RestartPolicy::restart`].
pub mod restart {
    /// `restart: no`.
    pub const NO: u8 = 0;
    /// `restart: always`.
    pub const ALWAYS: u8 = 1;
    /// `restart: on_failure`.
    pub const ON_FAILURE: u8 = 2;
    /// `restart: exit_on_failure`.
    pub const EXIT_ON_FAILURE: u8 = 3;
}

/// A probe's timing, as process-compose runs it (zeros are its defaults).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProbeSettings {
    /// Seconds before the first probe.
    #[serde(rename = "initialDelay", alias = "InitialDelay")]
    pub initial_delay_seconds: u64,
    /// Seconds between probes.
    #[serde(rename = "periodSeconds", alias = "PeriodSeconds")]
    pub period_seconds: u64,
    /// Failed probes in a row that count as not ready.
    #[serde(rename = "failureThreshold", alias = "FailureThreshold")]
    pub failure_threshold: u64,
}

impl ProbeSettings {
    /// How long a run may take to become ready: the initial delay, then a period for each
    /// failure the probe tolerates (process-compose's defaults: period 10 s, threshold 3).
    pub fn readiness_grace(&self) -> std::time::Duration {
        let period = if self.period_seconds == 0 {
            10
        } else {
            self.period_seconds
        };
        let threshold = if self.failure_threshold == 0 {
            3
        } else {
            self.failure_threshold
        };
        std::time::Duration::from_secs(
            self.initial_delay_seconds
                .saturating_add(period.saturating_mul(threshold)),
        )
    }
}

/// A time as process-compose writes it (Go's RFC 3339 with nanoseconds and a UTC offset,
/// `2026-08-20T14:04:21.903114208+03:00`), or `None` when it is not one.
pub fn parse_time(text: &str) -> Option<std::time::SystemTime> {
    let text = text.trim();
    let (local, offset_seconds) = match text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        Some(local) => (local, 0i64),
        None => {
            // The offset is the last `+` or `-` after the time's `T`.
            let t = text.find(['T', 't'])?;
            let sign_at = t + text[t..].rfind(['+', '-'])?;
            let (local, offset) = text.split_at(sign_at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = offset[1..].split_once(':')?;
            let seconds = hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60;
            (local, sign * seconds)
        }
    };
    let utc_if_local_were_utc = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = std::time::Duration::from_secs(offset_seconds.unsigned_abs());
    if offset_seconds >= 0 {
        utc_if_local_were_utc.checked_sub(shift)
    } else {
        utc_if_local_were_utc.checked_add(shift)
    }
}

impl ProcessState {
    /// The state without the figures that change at every sample (memory, CPU, last output):
    /// what pc-eventd keeps and compares between observations.
    pub fn without_usage(&self) -> Self {
        Self {
            mem: 0,
            cpu: 0.0,
            last_activity_time: None,
            ..self.clone()
        }
    }

    /// The namespace used in subjects: the first one when a process belongs to several.
    pub fn primary_namespace(&self) -> &str {
        self.namespace.primary()
    }

    /// Whether `code` counts as a successful exit for this process.
    pub fn is_success(&self, code: i32) -> bool {
        code == 0 || self.success_exit_codes.contains(&code)
    }

    /// What tells one incarnation (one start by a user, the project or a manual restart) from the
    /// next. Policy restarts stay within one incarnation; `restarts` numbers the runs inside it.
    /// Servers before v1.110.0 have no start time, so the pid stands in for it there.
    pub fn incarnation(&self) -> String {
        match (&self.process_start_time, self.pid) {
            (Some(start), _) => start.clone(),
            (None, pid) if pid > 0 => format!("pid:{pid}"),
            (None, _) => "none".to_owned(),
        }
    }
}

/// `namespace` is a string, or (v1.122.0+) an array when a process is in several namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "NamespaceField")]
pub struct Namespaces(Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum NamespaceField {
    One(String),
    Many(Vec<String>),
}

impl From<NamespaceField> for Namespaces {
    fn from(field: NamespaceField) -> Self {
        let names: Vec<String> = match field {
            NamespaceField::One(name) => vec![name],
            NamespaceField::Many(names) => names,
        };
        let names: Vec<String> = names.into_iter().filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            Self::default()
        } else {
            Self(names)
        }
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Self(vec![DEFAULT_NAMESPACE.to_owned()])
    }
}

/// The namespace process-compose gives a process that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

impl Namespaces {
    /// The first namespace, used in subjects.
    pub fn primary(&self) -> &str {
        self.0.first().map_or(DEFAULT_NAMESPACE, String::as_str)
    }

    /// Every namespace, in the order process-compose gives them.
    pub fn all(&self) -> &[String] {
        &self.0
    }
}

/// Namespaces given by name, the first being the primary one.
impl<const N: usize> From<[&str; N]> for Namespaces {
    fn from(names: [&str; N]) -> Self {
        NamespaceField::Many(names.iter().map(|n| (*n).to_owned()).collect()).into()
    }
}

/// A process status. Statuses this build does not know are kept verbatim in `Other`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum ProcessStatus {
    /// Waiting for its dependencies or its first start.
    #[default]
    Pending,
    /// Disabled in the project; never started.
    Disabled,
    /// A foreground process, run only on request.
    Foreground,
    /// Running.
    Running,
    /// A daemon process being launched.
    Launching,
    /// A daemon process launched (assumed alive).
    Launched,
    /// Waiting out its restart backoff.
    Restarting,
    /// Being stopped.
    Terminating,
    /// Ended and not restarted (whatever the exit code).
    Completed,
    /// Skipped because a dependency failed.
    Skipped,
    /// Could not be started.
    Error,
    /// REST/snapshot overlay for a scheduled process that is not running.
    Scheduled,
    /// REST/snapshot overlay for a successful `Completed` under a file watch (v1.122.0).
    Watching,
    /// A status this build does not know, verbatim.
    Other(String),
}

impl ProcessStatus {
    /// The status as process-compose spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "Pending",
            Self::Disabled => "Disabled",
            Self::Foreground => "Foreground",
            Self::Running => "Running",
            Self::Launching => "Launching",
            Self::Launched => "Launched",
            Self::Restarting => "Restarting",
            Self::Terminating => "Terminating",
            Self::Completed => "Completed",
            Self::Skipped => "Skipped",
            Self::Error => "Error",
            Self::Scheduled => "Scheduled",
            Self::Watching => "Watching",
            Self::Other(s) => s,
        }
    }

    /// The status that lifecycle rules read: the REST-only overlays `Scheduled` and `Watching`
    /// stand for a process that is not running, i.e. `Completed`.
    pub fn normalized(&self) -> Self {
        match self {
            Self::Scheduled | Self::Watching => Self::Completed,
            other => other.clone(),
        }
    }

    /// Running, or a daemon being launched or assumed alive.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running | Self::Launching | Self::Launched)
    }

    /// A run is in progress or winding down (running, restarting or terminating).
    pub fn is_active(&self) -> bool {
        self.is_running() || matches!(self, Self::Restarting | Self::Terminating)
    }

    /// A run has ended and nothing will restart it by policy.
    pub fn is_ended(&self) -> bool {
        matches!(
            self.normalized(),
            Self::Completed | Self::Error | Self::Skipped
        )
    }
}

impl From<String> for ProcessStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "Pending" => Self::Pending,
            "Disabled" => Self::Disabled,
            "Foreground" => Self::Foreground,
            "Running" => Self::Running,
            "Launching" => Self::Launching,
            "Launched" => Self::Launched,
            "Restarting" => Self::Restarting,
            "Terminating" => Self::Terminating,
            "Completed" => Self::Completed,
            "Skipped" => Self::Skipped,
            "Error" => Self::Error,
            "Scheduled" => Self::Scheduled,
            "Watching" => Self::Watching,
            _ => Self::Other(s),
        }
    }
}

impl From<ProcessStatus> for String {
    fn from(status: ProcessStatus) -> Self {
        status.as_str().to_owned()
    }
}

impl std::fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `is_ready`: `"Ready"`, `"Not Ready"`, or `"-"` (no probe, or reset on restart/stop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum Readiness {
    /// The probe passes.
    Ready,
    /// The probe fails (or has not passed yet).
    NotReady,
    /// No probe, or no run.
    #[default]
    Unknown,
}

impl From<String> for Readiness {
    fn from(s: String) -> Self {
        match s.as_str() {
            "Ready" => Self::Ready,
            "Not Ready" => Self::NotReady,
            _ => Self::Unknown,
        }
    }
}

impl From<Readiness> for String {
    fn from(r: Readiness) -> Self {
        r.as_str().to_owned()
    }
}

impl Readiness {
    /// The value as process-compose spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::NotReady => "Not Ready",
            Self::Unknown => "-",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_times_with_offsets_read_as_the_same_instant() {
        let utc = parse_time("2026-08-20T11:04:21.903114208Z").unwrap();
        assert_eq!(parse_time("2026-08-20T14:04:21.903114208+03:00"), Some(utc));
        assert_eq!(parse_time("2026-08-20T06:34:21.903114208-04:30"), Some(utc));
        assert_eq!(
            utc.duration_since(parse_time("2026-08-20T11:04:21Z").unwrap())
                .unwrap()
                .as_nanos(),
            903_114_208
        );
        for bad in ["", "yesterday", "2026-08-20T14:04:21+3", "2026-08-20"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn probe_settings_of_both_key_styles_give_the_grace() {
        // v1.122.0 (camelCase) and v1.103.0 (Go field names), as their servers send them
        let current = r#"{"name":"api","readinessProbe":{"exec":{"command":"false"},"initialDelay":1,"periodSeconds":2,"timeoutSeconds":1,"successThreshold":1,"failureThreshold":3}}"#;
        let old = r#"{"Name":"api","ReadinessProbe":{"Exec":{"Command":"false"},"InitialDelay":1,"PeriodSeconds":2,"TimeoutSeconds":1,"SuccessThreshold":1,"FailureThreshold":3}}"#;
        for body in [current, old] {
            let info: ProcessInfo = serde_json::from_str(body).unwrap();
            let probe = info.readiness_probe.unwrap();
            assert_eq!(probe.readiness_grace(), std::time::Duration::from_secs(7));
        }
        let none: ProcessInfo =
            serde_json::from_str(r#"{"Name":"plain","ReadinessProbe":null}"#).unwrap();
        assert_eq!(none.readiness_probe, None);
        // the restart backoff, in both styles; absent when the policy leaves it out
        let current =
            r#"{"name":"api","restartPolicy":{"restart":1,"backoffSeconds":3,"maxRestarts":0}}"#;
        let old =
            r#"{"Name":"api","RestartPolicy":{"Restart":1,"BackoffSeconds":3,"MaxRestarts":0}}"#;
        for body in [current, old] {
            let info: ProcessInfo = serde_json::from_str(body).unwrap();
            assert_eq!(info.restart_policy.backoff_seconds, 3, "{body}");
        }
        assert_eq!(none.restart_policy, RestartPolicy::default());
        // process-compose's defaults where the settings are zero or absent
        let defaults = ProbeSettings::default();
        assert_eq!(
            defaults.readiness_grace(),
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn decodes_the_reference_sample() {
        let body = r#"{"data":[
         {"name":"api","namespace":"default","status":"Running","system_time":"2m13s","age":133482915612,
          "is_ready":"Ready","has_ready_probe":true,"restarts":0,"exit_code":0,"pid":48213,
          "is_elevated":false,"password_provided":false,"mem":52846592,"cpu":1.7,"is_running":true,
          "process_start_time":"2026-08-20T14:02:08.420771944+03:00"},
         {"name":"worker","namespace":["backend","jobs"],"status":"Completed","is_ready":"-",
          "restarts":3,"exit_code":2,"pid":48391,"success_exit_codes":[3]},
         {"name":"docs","namespace":"default","status":"Disabled"}
        ]}"#;
        let parsed: ProcessesResponse = serde_json::from_str(body).unwrap();
        let [api, worker, docs] = &parsed.data[..] else {
            panic!("three processes expected")
        };
        assert_eq!(api.status, ProcessStatus::Running);
        assert_eq!(api.is_ready, Readiness::Ready);
        assert_eq!(api.incarnation(), "2026-08-20T14:02:08.420771944+03:00");
        assert_eq!(worker.namespace.all(), ["backend", "jobs"]);
        assert_eq!(worker.primary_namespace(), "backend");
        assert!(worker.is_success(3) && worker.is_success(0) && !worker.is_success(2));
        assert_eq!(worker.incarnation(), "pid:48391");
        assert_eq!(docs.status, ProcessStatus::Disabled);
        assert_eq!(docs.incarnation(), "none");
    }

    #[test]
    fn missing_and_unknown_fields_are_tolerated() {
        let state: ProcessState =
            serde_json::from_str(r#"{"name":"x","status":"Hibernating","future":{"a":1}}"#)
                .unwrap();
        assert_eq!(state.status, ProcessStatus::Other("Hibernating".into()));
        assert_eq!(state.primary_namespace(), "default");
        assert_eq!(state.is_ready, Readiness::Unknown);
    }

    #[test]
    fn empty_namespace_falls_back_to_default() {
        let state: ProcessState = serde_json::from_str(r#"{"name":"x","namespace":[]}"#).unwrap();
        assert_eq!(state.primary_namespace(), "default");
        let state: ProcessState = serde_json::from_str(r#"{"name":"x","namespace":""}"#).unwrap();
        assert_eq!(state.primary_namespace(), "default");
    }
}
