//! What the benches (benches/*.rs) share: their `main`, the daemon's release binary as a child
//! process, and what /proc says of a process or of the whole machine (CPU time, memory, parent,
//! arguments).

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support;
use crate::support::compose::ProcessCompose;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// A bench's whole `main`: runs `bench` on a Tokio runtime of two workers, then prints the
/// Markdown it returns on stdout (where scripts/bench.sh takes it from), or its error on stderr
/// and fails: a bench fails only when it cannot set its peers up.
pub fn main_of<E: std::fmt::Display>(
    name: &str,
    bench: impl Future<Output = std::result::Result<String, E>>,
) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(bench) {
        Ok(markdown) => {
            print!("{markdown}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench: {name}: setup failed: {err}");
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------------------------------------
// The daemon as a separate process

/// How the daemon learns about state changes in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stream,
    Poll(Duration),
}

impl Mode {
    pub const ALL: [Mode; 3] = [
        Mode::Stream,
        Mode::Poll(Duration::from_secs(2)),
        Mode::Poll(Duration::from_millis(200)),
    ];

    pub fn label(self) -> String {
        match self {
            Mode::Stream => "stream".into(),
            Mode::Poll(every) => format!("poll {}", humantime::format_duration(every)),
        }
    }
}

/// The release binary `pc-eventd run`, with its own config file and log, stopped on drop.
pub struct DaemonProcess {
    child: Option<Child>,
    health_port: u16,
    dir: TempDir,
}

impl DaemonProcess {
    /// Starts it against `compose_url` and `nats_url` with the defaults but for the mode,
    /// the health endpoint's port (a free one) and `source = "bench"`.
    pub fn spawn(compose_url: &str, nats_url: &str, mode: Mode) -> Result<Self> {
        Self::spawn_with(compose_url, nats_url, mode, "bench", "")
    }

    /// [`DaemonProcess::spawn`] as host `source`, and with `settings` (TOML) on top: dotted keys
    /// first (`nats.stream.replicas = 3`), then any tables of their own (`[conditions]`). The
    /// file's own settings are dotted keys at its top for that reason: a table header can be
    /// written only once.
    pub fn spawn_with(
        compose_url: &str,
        nats_url: &str,
        mode: Mode,
        source: &str,
        settings: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let health_port = support::free_port();
        let (mode_name, poll_interval) = match mode {
            Mode::Stream => ("stream", Duration::from_secs(2)),
            Mode::Poll(every) => ("poll", every),
        };
        let config = format!(
            "process_compose.url = \"{compose_url}\"\nprocess_compose.mode = \"{mode_name}\"\n\
             process_compose.poll_interval = \"{}\"\nprocess_compose.source = \"{source}\"\n\
             nats.url = \"{nats_url}\"\n\
             health.listen = \"127.0.0.1:{health_port}\"\n\
             daemon.state_dir = \"{}\"\n\
             log.format = \"text\"\n{settings}",
            humantime::format_duration(poll_interval),
            dir.path().display(),
        );
        let config_path = dir.path().join("pc-eventd.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("pc-eventd.log"))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_pc-eventd"));
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Only the file configures it: no stray PC_EVENTD_* layer, no systemd, no RUST_LOG.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PC_EVENTD_") {
                command.env_remove(key);
            }
        }
        for key in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
            "RUST_LOG",
        ] {
            command.env_remove(key);
        }
        let child = command.spawn()?;
        Ok(Self {
            child: Some(child),
            health_port,
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pc-eventd.log")).unwrap_or_default()
    }

    /// Waits for `/readyz` to answer 200: process-compose answered, the stream is right.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = support::http_get(self.health_port, "/readyz").await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(format!("pc-eventd exited ({status}); log:\n{}", self.log()).into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "pc-eventd not ready within {timeout:?}; log:\n{}",
                    self.log()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One value of the Prometheus text on `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics().await?, name)
    }

    /// The Prometheus text on `/metrics`.
    pub async fn metrics(&self) -> Option<String> {
        match support::http_get(self.health_port, "/metrics").await.ok()? {
            (200, body) => Some(body),
            _ => None,
        }
    }
}

/// The value of the unlabelled series `name` in a Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            support::terminate(&mut child, Duration::from_secs(15));
        }
    }
}

// ------------------------------------------------------------------------------------------
// What /proc says

/// A `kB` line of /proc/PID/status.
pub fn status_kb(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status").into())
}

/// utime + stime of /proc/PID/stat, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let [utime, stime, _, _] = cpu_counters(pid)?;
    Ok(utime + stime)
}

/// [`cpu_ticks`] plus cutime + cstime: with the CPU time of the children it has waited for, such
/// as process-compose's runs of its processes, which are gone by the time anyone could look.
pub fn cpu_ticks_with_children(pid: u32) -> Result<u64> {
    Ok(cpu_counters(pid)?.iter().sum())
}

/// utime, stime, cutime and cstime of /proc/PID/stat (fields 14 to 17), in clock ticks.
fn cpu_counters(pid: u32) -> Result<[u64; 4]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after `(comm)`, which may itself hold spaces: state is field 3, utime 14.
    let after = stat.rsplit_once(')').ok_or("unreadable /proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let mut counters = [0; 4];
    for (i, counter) in counters.iter_mut().enumerate() {
        *counter = fields
            .get(11 + i)
            .ok_or("/proc/PID/stat ends early")?
            .parse()?;
    }
    Ok(counters)
}

/// The CPU time all CPUs spent busy since boot (the first line of /proc/stat: everything but
/// idle and iowait), in clock ticks: over a window, 100 % per busy core, as [`cpu_ticks`].
pub fn machine_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no cpu line in /proc/stat")?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = ticks[..] else {
        return Err(format!("unreadable /proc/stat: {line}").into());
    };
    Ok(user + nice + system + irq + softirq + steal)
}

pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The bench's own children (direct, as `Command::spawn` starts them) that have `arg` among
/// their arguments. The test support keeps its peers' `Child`ren to itself, but starts each with
/// a path of its own: process-compose with its temp project, a nats-server of the fleet with
/// its packaged configuration.
pub fn children_with_arg(arg: &Path) -> Result<Vec<u32>> {
    use std::os::unix::ffi::OsStrExt as _;
    let me = std::process::id();
    let arg = arg.as_os_str().as_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: skip it.
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == arg) && parent_pid(pid) == Some(me) {
            found.push(pid);
        }
    }
    Ok(found)
}

/// process-compose's pid: the one child of the bench run with `up -f {work_dir}/process-compose.yaml`
/// (the temp dir is unique; its own children, the project's processes, hold no such argument).
pub fn compose_pid(pc: &ProcessCompose) -> Result<u32> {
    let project = pc.work_dir().join("process-compose.yaml");
    match children_with_arg(&project)?[..] {
        [pid] => Ok(pid),
        ref found => Err(format!(
            "expected one process-compose child of ours running {}, found {found:?}",
            project.display()
        )
        .into()),
    }
}

/// The parent pid in /proc/PID/stat (field 4).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
