//! The project file: the subset of process-compose's YAML that the emulator
//! understands. Unknown keys are ignored, as process-compose does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The whole project, after merging every `-f` file.
#[derive(Debug, Clone, Default)]
pub struct Project {
    /// Global `environment:` entries, given to every process before its own.
    pub environment: Vec<String>,
    /// Processes by name (sorted; process-compose's own order is random).
    pub processes: BTreeMap<String, ProcessConfig>,
    /// The project files read, in order (`fileNames` of `GET /project/state`).
    pub files: Vec<PathBuf>,
    /// The top-level `name:` of the last file that has one.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ProjectFile {
    name: Option<String>,
    environment: Vec<String>,
    processes: BTreeMap<String, ProcessConfig>,
}

/// One entry under `processes:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProcessConfig {
    /// Run as `bash -c "<command>"`.
    pub command: String,
    pub namespace: Option<String>,
    pub disabled: bool,
    pub working_dir: Option<PathBuf>,
    pub environment: Vec<String>,
    pub availability: Availability,
    pub readiness_probe: Option<Probe>,
    /// Only its presence matters: it sets `has_ready_probe`. A liveness
    /// probe changes nothing visible in the API for non-daemon processes.
    pub liveness_probe: Option<serde_yaml::Value>,
    pub shutdown: Shutdown,
    pub success_exit_codes: Vec<i32>,
}

impl ProcessConfig {
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
    }

    /// process-compose's `has_ready_probe`: a readiness or a liveness probe.
    pub fn has_ready_probe(&self) -> bool {
        self.readiness_probe.is_some() || self.liveness_probe.is_some()
    }

    /// `max(backoff_seconds, 1)` seconds, used by both policy and manual restarts.
    pub fn backoff(&self) -> Duration {
        Duration::from_secs(self.availability.backoff_seconds.max(1))
    }

    /// Whether `code` counts as a successful exit.
    pub fn is_success(&self, code: i32) -> bool {
        code == 0 || self.success_exit_codes.contains(&code)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    OnFailure,
    ExitOnFailure,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Availability {
    pub restart: RestartPolicy,
    pub backoff_seconds: u64,
    /// 0 = unlimited.
    pub max_restarts: u32,
    /// Shut the project down when this process ends (any exit code).
    pub exit_on_end: bool,
}

impl Default for Availability {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::No,
            backoff_seconds: 1,
            max_restarts: 0,
            exit_on_end: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Probe {
    pub exec: Option<ExecProbe>,
    /// Accepted but not run by the emulator (logged as unsupported).
    pub http_get: Option<serde_yaml::Value>,
    pub initial_delay_seconds: u64,
    pub period_seconds: u64,
    pub timeout_seconds: u64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            exec: None,
            http_get: None,
            initial_delay_seconds: 0,
            period_seconds: 10,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExecProbe {
    pub command: String,
    pub working_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    /// Signal number sent to the process group (default 15, SIGTERM).
    pub signal: i32,
    /// 0 = wait for ever; otherwise SIGKILL the group after this many seconds.
    pub timeout_seconds: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            signal: 15,
            timeout_seconds: 0,
        }
    }
}

/// The files process-compose looks for when no `-f` is given, in its order.
const DEFAULT_FILES: [&str; 4] = [
    "compose.yml",
    "compose.yaml",
    "process-compose.yml",
    "process-compose.yaml",
];

/// Loads and merges `files` (a later file replaces whole processes of the
/// same name). With no files, uses the first default file found in the
/// current directory.
pub fn load(files: &[PathBuf]) -> anyhow::Result<Project> {
    let files: Vec<PathBuf> = if files.is_empty() {
        let found = DEFAULT_FILES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no project file given with -f and none of {} found in the current directory",
                    DEFAULT_FILES.join(", ")
                )
            })?;
        vec![found]
    } else {
        files.to_vec()
    };

    let mut project = Project::default();
    for file in &files {
        let parsed = read_file(file)?;
        project.environment.extend(parsed.environment);
        project.processes.extend(parsed.processes);
        if parsed.name.is_some() {
            project.name = parsed.name;
        }
    }
    project.files = files;
    validate(&project)?;
    Ok(project)
}

fn read_file(path: &Path) -> anyhow::Result<ProjectFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read project file {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(ProjectFile::default());
    }
    serde_yaml::from_str(&text)
        .with_context(|| format!("cannot parse project file {}", path.display()))
}

fn validate(project: &Project) -> anyhow::Result<()> {
    for (name, proc) in &project.processes {
        if proc.command.trim().is_empty() {
            bail!("process {name}: `command` is missing or empty");
        }
        if nix::sys::signal::Signal::try_from(proc.shutdown.signal).is_err() {
            bail!(
                "process {name}: shutdown.signal {} is not a valid signal number",
                proc.shutdown.signal
            );
        }
        if let Some(probe) = &proc.readiness_probe
            && probe.period_seconds == 0
        {
            bail!("process {name}: readiness_probe.period_seconds must be > 0");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_subset_and_ignores_unknown_keys() {
        let text = r#"
version: "0.5"
log_level: debug
processes:
  web:
    command: "sleep 100"
    namespace: ns
    working_dir: /tmp
    environment: ["A=1"]
    success_exit_codes: [3]
    unknown_key: whatever
    availability:
      restart: on_failure
      backoff_seconds: 2
      max_restarts: 3
    readiness_probe:
      exec: { command: "true" }
      period_seconds: 1
    shutdown:
      signal: 2
      timeout_seconds: 5
  off:
    command: "true"
    disabled: true
    availability:
      restart: no
"#;
        let file: ProjectFile = serde_yaml::from_str(text).unwrap();
        let web = &file.processes["web"];
        assert_eq!(web.namespace(), "ns");
        assert_eq!(web.availability.restart, RestartPolicy::OnFailure);
        assert_eq!(web.backoff(), Duration::from_secs(2));
        assert_eq!(web.availability.max_restarts, 3);
        let probe = web.readiness_probe.as_ref().unwrap();
        assert_eq!(probe.period_seconds, 1);
        assert_eq!(probe.timeout_seconds, 1);
        assert_eq!(probe.failure_threshold, 3);
        assert_eq!(web.shutdown.signal, 2);
        assert!(web.is_success(3) && web.is_success(0) && !web.is_success(1));
        assert!(web.has_ready_probe());
        let off = &file.processes["off"];
        assert!(off.disabled);
        assert_eq!(off.namespace(), "default");
        assert_eq!(off.availability.restart, RestartPolicy::No);
        assert_eq!(off.backoff(), Duration::from_secs(1));
        assert_eq!(off.shutdown.signal, 15);
        assert!(!off.has_ready_probe());
    }
}
