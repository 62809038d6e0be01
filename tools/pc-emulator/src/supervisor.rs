//! The per-process state machine (process-compose's `Process.run()` loop).
//!
//! Every process has one supervisor task. It owns the child and is the only
//! writer of the status; the API talks to it through [`Cmd`] messages and reads
//! the state under the process's mutex. The readiness probe task only writes
//! `is_ready`, and asks the supervisor to stop the child when it gives up.
//!
//! Every change that process-compose publishes on its state stream (a status,
//! an `is_ready` change, the final exit) goes through [`Proc::publish`], which
//! makes the change and queues the live frame under the broadcast hub's lock.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Local;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use crate::broadcast::{Hub, NameFilter, Subscription};
use crate::project::{ProcessConfig, Project, RestartPolicy};
use crate::state::{Health, Polled, ProcessStateJson, State, Status};
use crate::version::Version;
use crate::{info, probe, warn};

/// How long a project shutdown waits for a process that ignores its shutdown
/// signal when `shutdown.timeout_seconds` is 0, before SIGKILLing its group.
/// (process-compose would wait for ever; the emulator must not leave children behind.)
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The answer to an API request: `Err` carries the `{"error": …}` text.
pub type Reply = oneshot::Sender<Result<(), String>>;

/// Requests to a supervisor.
pub enum Cmd {
    Start(Reply),
    Stop(Reply),
    Restart(Reply),
    /// Project shutdown: stop without restart, answer once the child is reaped.
    Shutdown(oneshot::Sender<()>),
}

/// Why the emulator should exit, sent to `main`.
#[derive(Debug)]
pub enum Trigger {
    /// `POST /project/stop`.
    ProjectStop,
    /// A process with `exit_on_failure` failed, or one with `exit_on_end` ended.
    ProcessExit { name: String, code: i32 },
}

/// Project-wide bookkeeping shared by all supervisors.
struct Ctx {
    /// Number of processes that are not idle (process-compose's run wait group).
    active: watch::Sender<usize>,
    shutting_down: AtomicBool,
    exit_code: Mutex<Option<i32>>,
    triggers: mpsc::UnboundedSender<Trigger>,
}

/// One configured process: its config, its state, and its supervisor's mailbox.
pub struct Proc {
    pub name: String,
    pub cfg: ProcessConfig,
    /// `KEY=VALUE` entries layered on top of the emulator's environment.
    env: Vec<String>,
    state: Mutex<State>,
    tx: mpsc::UnboundedSender<Cmd>,
    hub: Arc<Hub>,
    version: Version,
}

impl Proc {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The REST form (`GET /processes`, the stream's snapshot): refreshes the
    /// polled fields, as process-compose's `getState` does.
    pub fn snapshot(&self) -> ProcessStateJson {
        self.lock().poll_json(&self.name, &self.cfg, self.version)
    }

    /// Changes the state with `change` and, if it returns true, publishes the
    /// resulting live frame to the state stream, all under the hub's lock
    /// (then the state's: the one lock order), so that no subscriber's
    /// snapshot can fall between the change and its frame.
    pub fn publish(&self, change: impl FnOnce(&mut State) -> bool) {
        let mut hub = self.hub.lock();
        let mut st = self.lock();
        if change(&mut st) && hub.has_subscribers() {
            let frame = st.live_json(&self.name, &self.cfg, self.version);
            drop(st);
            hub.publish(&frame);
        }
    }

    /// Sends a request to the supervisor and waits for its answer.
    pub async fn request(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| "project is shutting down".to_owned())?;
        rx.await
            .unwrap_or_else(|_| Err("project is shutting down".to_owned()))
    }

    /// Called by the probe task. Ignored unless `run_id` is still the current
    /// run and the process is Running.
    pub fn set_health(&self, run_id: u64, health: Health) {
        let mut changed = false;
        self.publish(|st| {
            if st.run_id != run_id || st.status != Status::Running || st.health == health {
                return false;
            }
            st.health = health;
            if health == Health::Ready && st.ready_time.is_none() {
                st.ready_time = Some(Local::now());
            }
            changed = true;
            true
        });
        if changed {
            info!("[{}] readiness: {:?}", self.name, health);
        }
    }

    /// A `bash -c` command with the process's environment, in its own process group.
    pub fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .env("PC_PROC_NAME", &self.name)
            .env("PC_REPLICA_NUM", "0")
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        for entry in &self.env {
            if let Some((key, value)) = entry.split_once('=') {
                cmd.env(key, value);
            }
        }
        cmd
    }
}

/// All processes of the project and their supervisors.
pub struct Runner {
    procs: BTreeMap<String, Arc<Proc>>,
    ctx: Arc<Ctx>,
    hub: Arc<Hub>,
}

impl Runner {
    /// Creates the processes and spawns one supervisor task each. Every
    /// enabled process starts at once (or only those in `only`, when given;
    /// the others stay Pending).
    pub fn start(
        project: Project,
        only: &[String],
        version: Version,
        triggers: mpsc::UnboundedSender<Trigger>,
    ) -> anyhow::Result<Arc<Runner>> {
        for name in only {
            if !project.processes.contains_key(name) {
                anyhow::bail!("no such process: {name}");
            }
        }
        let autostart = |name: &str, cfg: &ProcessConfig| {
            !cfg.disabled && (only.is_empty() || only.iter().any(|n| n == name))
        };
        let initial = project
            .processes
            .iter()
            .filter(|(name, cfg)| autostart(name, cfg))
            .count();
        let ctx = Arc::new(Ctx {
            active: watch::Sender::new(initial),
            shutting_down: AtomicBool::new(false),
            exit_code: Mutex::new(None),
            triggers,
        });
        let hub = Hub::new();
        let mut procs = BTreeMap::new();
        for (name, cfg) in project.processes {
            let (tx, rx) = mpsc::unbounded_channel();
            let start_now = autostart(&name, &cfg);
            let mut env = project.environment.clone();
            env.extend(cfg.environment.iter().cloned());
            let proc = Arc::new(Proc {
                state: Mutex::new(State::new(cfg.disabled)),
                name: name.clone(),
                cfg,
                env,
                tx,
                hub: hub.clone(),
                version,
            });
            let supervisor = Supervisor {
                proc: proc.clone(),
                rx,
                ctx: ctx.clone(),
                active: start_now,
                on_running: Vec::new(),
                shutdown_acks: Vec::new(),
            };
            tokio::spawn(supervisor.run(start_now));
            procs.insert(name, proc);
        }
        Ok(Arc::new(Runner { procs, ctx, hub }))
    }

    /// A state-stream subscriber: one snapshot frame per (wanted) process,
    /// taken and registered under the hub's lock, then live frames.
    pub fn subscribe(&self, filter: NameFilter) -> Subscription {
        let mut hub = self.hub.lock();
        let snapshot = self.procs.values().map(|p| p.snapshot());
        hub.subscribe(&self.hub, filter, snapshot)
    }

    /// Project shutdown, once every process is stopped: the state streams
    /// send what they have queued, then drop their connections.
    pub fn close_streams(&self) {
        self.hub.close();
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Proc>> {
        self.procs.get(name)
    }

    pub fn processes(&self) -> impl Iterator<Item = &Arc<Proc>> {
        self.procs.values()
    }

    /// Watches the number of processes that are running, restarting or stopping.
    pub fn active(&self) -> watch::Receiver<usize> {
        self.ctx.active.subscribe()
    }

    /// The exit code set by `exit_on_failure` / `exit_on_end`, if any.
    pub fn exit_code(&self) -> Option<i32> {
        *self.ctx.exit_code.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request_project_stop(&self) {
        let _ = self.ctx.triggers.send(Trigger::ProjectStop);
    }

    /// SIGKILLs every process group that is still running or stopping.
    pub fn kill_all(&self) {
        for proc in self.procs.values() {
            let st = proc.lock();
            if matches!(st.status, Status::Running | Status::Terminating) {
                signal_group(st.pid, Signal::SIGKILL);
            }
        }
    }

    /// Stops every process (Terminating → Completed) and waits until all
    /// children are reaped. Later start requests are refused.
    pub async fn shutdown(&self) {
        self.ctx.shutting_down.store(true, Ordering::SeqCst);
        let mut acks = Vec::new();
        for proc in self.procs.values() {
            let (tx, rx) = oneshot::channel();
            if proc.tx.send(Cmd::Shutdown(tx)).is_ok() {
                acks.push(rx);
            }
        }
        for ack in acks {
            let _ = ack.await;
        }
    }
}

/// What the supervisor does next.
enum Next {
    Idle,
    NewIncarnation,
    Spawn,
    PolicyBackoff,
    ManualBackoff,
}

/// Why a running child ended; a later request can only raise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    OnItsOwn,
    ProbeFailed,
    Stop,
    Restart,
    Shutdown,
}

struct Supervisor {
    proc: Arc<Proc>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    ctx: Arc<Ctx>,
    /// Counted in `ctx.active`.
    active: bool,
    /// Start/restart requests answered once the next child is Running.
    on_running: Vec<Reply>,
    /// Shutdown requests answered once idle.
    shutdown_acks: Vec<oneshot::Sender<()>>,
}

impl Supervisor {
    async fn run(mut self, autostart: bool) {
        let mut next = if autostart {
            Next::NewIncarnation
        } else {
            Next::Idle
        };
        loop {
            next = match next {
                Next::Idle => match self.idle().await {
                    Some(next) => next,
                    None => return,
                },
                Next::NewIncarnation => {
                    self.new_incarnation();
                    Next::Spawn
                }
                Next::Spawn => self.spawn_and_wait().await,
                Next::PolicyBackoff => self.policy_backoff().await,
                Next::ManualBackoff => self.manual_backoff().await,
            };
        }
    }

    fn name(&self) -> &str {
        &self.proc.name
    }

    fn cfg(&self) -> &ProcessConfig {
        &self.proc.cfg
    }

    fn set_active(&mut self, active: bool) {
        if self.active != active {
            self.active = active;
            self.ctx.active.send_modify(|n| {
                if active {
                    *n += 1;
                } else {
                    *n = n.saturating_sub(1);
                }
            });
        }
    }

    fn not_running(&self) -> Result<(), String> {
        Err(format!("process {} is not running", self.name()))
    }

    fn already_running(&self) -> Result<(), String> {
        Err(format!("process {} is already running", self.name()))
    }

    /// Not running (Pending, Disabled, Completed, Error): wait for a start.
    async fn idle(&mut self) -> Option<Next> {
        for reply in self.on_running.drain(..) {
            let _ = reply.send(Err("project is shutting down".to_owned()));
        }
        self.set_active(false);
        for ack in self.shutdown_acks.drain(..) {
            let _ = ack.send(());
        }
        loop {
            match self.rx.recv().await? {
                Cmd::Start(reply) | Cmd::Restart(reply) => {
                    if self.ctx.shutting_down.load(Ordering::SeqCst) {
                        let _ = reply.send(Err("project is shutting down".to_owned()));
                        continue;
                    }
                    self.on_running.push(reply);
                    self.set_active(true);
                    return Some(Next::NewIncarnation);
                }
                Cmd::Stop(reply) => {
                    let _ = reply.send(self.not_running());
                }
                Cmd::Shutdown(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    /// A fresh `ProcessState`: `restarts` carried over, everything else reset.
    fn new_incarnation(&mut self) {
        let mut st = self.proc.lock();
        st.status = Status::Pending;
        st.health = Health::Unknown;
        st.exit_code = 0;
        st.pid = 0;
        st.run_started = None;
        st.run_ended = None;
        st.start_time = None;
        st.ready_time = None;
        st.end_time = None;
        st.polled = Polled::default();
    }

    /// Status Completed (end of an incarnation), published with the final
    /// exit code, `is_running: false` and `process_end_time`.
    fn complete(&mut self) {
        self.end_with(Status::Completed);
    }

    /// process-compose's `onProcessEnd`: the terminal status, refreshed
    /// `is_running`, and one frame.
    fn end_with(&self, status: Status) {
        self.proc.publish(|st| {
            st.status = status;
            st.end_time = Some(Local::now());
            if st.run_ended.is_none() {
                st.run_ended = Some(std::time::Instant::now());
            }
            st.polled.is_running = false;
            true
        });
    }

    /// `exit_on_failure` with a failure, or `exit_on_end`: shut the project down.
    fn exit_triggers(&self, code: i32) {
        let availability = &self.cfg().availability;
        let failed = !self.cfg().is_success(code);
        if (availability.restart == RestartPolicy::ExitOnFailure && failed)
            || availability.exit_on_end
        {
            {
                let mut exit_code = self.ctx.exit_code.lock().unwrap_or_else(|e| e.into_inner());
                exit_code.get_or_insert(code);
            }
            let _ = self.ctx.triggers.send(Trigger::ProcessExit {
                name: self.name().to_owned(),
                code,
            });
        }
    }

    fn spawn_child(&self) -> std::io::Result<Child> {
        if let Some(dir) = &self.cfg().working_dir
            && !dir.is_dir()
        {
            return Err(std::io::Error::other(format!(
                "working_dir {} is not a directory",
                dir.display()
            )));
        }
        let mut cmd = self.proc.command(&self.cfg().command);
        if let Some(dir) = &self.cfg().working_dir {
            cmd.current_dir(dir);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let Some(out) = child.stdout.take() {
            forward_output(self.proc.clone(), out);
        }
        if let Some(err) = child.stderr.take() {
            forward_output(self.proc.clone(), err);
        }
        Ok(child)
    }

    /// Runs one child until it exits, handling requests meanwhile.
    async fn spawn_and_wait(&mut self) -> Next {
        let mut child = match self.spawn_child() {
            Ok(child) => child,
            Err(err) => {
                warn!("[{}] cannot start: {err}", self.name());
                self.end_with(Status::Error);
                // process-compose answers start/restart before the exec happens.
                for reply in self.on_running.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                return Next::Idle;
            }
        };
        let pid = child.id().unwrap_or(0);
        // process-compose publishes Running before the exec: the frame has
        // the previous pid (0 in a new incarnation) and, in a new
        // incarnation, no process_start_time yet.
        self.proc.publish(|st| {
            st.status = Status::Running;
            true
        });
        let run_id = {
            let mut st = self.proc.lock();
            st.pid = pid;
            st.run_id += 1;
            st.run_started = Some(std::time::Instant::now());
            st.run_ended = None;
            if st.start_time.is_none() {
                let now = Local::now();
                st.start_time = Some(now);
                if !self.cfg().has_ready_probe() {
                    st.ready_time = Some(now);
                }
            }
            st.run_id
        };
        info!("[{}] started, pid {pid}", self.name());
        for reply in self.on_running.drain(..) {
            let _ = reply.send(Ok(()));
        }

        let (fatal_tx, mut fatal_rx) = mpsc::channel::<()>(1);
        let _probe = self
            .cfg()
            .readiness_probe
            .as_ref()
            .and_then(|p| probe::spawn(self.proc.clone(), run_id, p, fatal_tx.clone()));

        let mut end = End::OnItsOwn;
        let mut terminating = false;
        let mut kill_at: Option<Instant> = None;
        let mut stop_replies: Vec<Reply> = Vec::new();
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(()) = fatal_rx.recv(), if !terminating => {
                    warn!("[{}] readiness probe failed too many times, stopping it", self.name());
                    end = End::ProbeFailed;
                    terminating = true;
                    self.begin_terminate(pid, &mut kill_at);
                }
                () = sleep_or_never(kill_at) => {
                    warn!("[{}] did not stop in time, sending SIGKILL", self.name());
                    signal_group(pid, Signal::SIGKILL);
                    kill_at = None;
                }
                Some(cmd) = self.rx.recv() => match cmd {
                    Cmd::Start(reply) => {
                        let _ = reply.send(self.already_running());
                    }
                    Cmd::Stop(reply) => {
                        end = end.max(End::Stop);
                        if !terminating {
                            terminating = true;
                            self.begin_terminate(pid, &mut kill_at);
                        }
                        // With a shutdown timeout, process-compose answers
                        // only once the process is gone (or killed).
                        if self.cfg().shutdown.timeout_seconds > 0 {
                            stop_replies.push(reply);
                        } else {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Cmd::Restart(reply) => {
                        end = end.max(End::Restart);
                        self.on_running.push(reply);
                        if !terminating {
                            terminating = true;
                            self.begin_terminate(pid, &mut kill_at);
                        }
                    }
                    Cmd::Shutdown(ack) => {
                        end = End::Shutdown;
                        self.shutdown_acks.push(ack);
                        if !terminating {
                            terminating = true;
                            self.begin_terminate(pid, &mut kill_at);
                        }
                        let grace = match self.cfg().shutdown.timeout_seconds {
                            0 => SHUTDOWN_GRACE,
                            secs => Duration::from_secs(secs),
                        };
                        let deadline = Instant::now() + grace;
                        kill_at = Some(kill_at.map_or(deadline, |at| at.min(deadline)));
                    }
                },
            }
        };
        drop(_probe);
        drop(fatal_tx);

        let code = match status {
            Ok(status) => exit_code(status),
            Err(err) => {
                warn!("[{}] wait failed: {err}", self.name());
                -1
            }
        };
        if end >= End::Stop {
            // Whatever is left of the group (children that ignored the signal).
            signal_group(pid, Signal::SIGKILL);
        }
        {
            let mut st = self.proc.lock();
            st.exit_code = code;
            st.run_ended = Some(std::time::Instant::now());
        }
        info!("[{}] exited with code {code}", self.name());
        for reply in stop_replies {
            let _ = reply.send(Ok(()));
        }

        match end {
            End::Shutdown => {
                self.complete();
                Next::Idle
            }
            End::Stop => {
                self.complete();
                self.exit_triggers(code);
                Next::Idle
            }
            End::Restart => {
                self.complete();
                Next::ManualBackoff
            }
            End::OnItsOwn | End::ProbeFailed => self.apply_restart_policy(code),
        }
    }

    /// Status Terminating, then the shutdown signal to the process group.
    fn begin_terminate(&self, pid: u32, kill_at: &mut Option<Instant>) {
        self.proc.publish(|st| {
            st.status = Status::Terminating;
            st.health = Health::Unknown;
            true
        });
        let shutdown = &self.cfg().shutdown;
        let signal = Signal::try_from(shutdown.signal).unwrap_or(Signal::SIGTERM);
        info!("[{}] terminating: {signal} to group {pid}", self.name());
        signal_group(pid, signal);
        if shutdown.timeout_seconds > 0 {
            *kill_at = Some(Instant::now() + Duration::from_secs(shutdown.timeout_seconds));
        }
    }

    /// After an exit on its own (or a fatal readiness failure).
    fn apply_restart_policy(&mut self, code: i32) -> Next {
        let availability = &self.proc.cfg.availability;
        let wants_restart = match availability.restart {
            RestartPolicy::No | RestartPolicy::ExitOnFailure => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !self.proc.cfg.is_success(code),
        };
        let mut restarting = false;
        self.proc.publish(|st| {
            restarting = wants_restart
                && (availability.max_restarts == 0 || st.restarts < availability.max_restarts);
            if restarting {
                st.status = Status::Restarting;
                st.health = Health::Unknown;
            }
            restarting
        });
        if restarting {
            // process-compose publishes Restarting with the old counter and
            // increments it right after, before the backoff sleep.
            let mut st = self.proc.lock();
            st.restarts += 1;
            info!(
                "[{}] restarting in {:?}, restarts: {}",
                self.proc.name,
                self.proc.cfg.backoff(),
                st.restarts
            );
            return Next::PolicyBackoff;
        }
        self.complete();
        self.exit_triggers(code);
        Next::Idle
    }

    /// Status Restarting: sleep the backoff, then run again in the same incarnation.
    async fn policy_backoff(&mut self) -> Next {
        let deadline = Instant::now() + self.cfg().backoff();
        loop {
            tokio::select! {
                () = sleep_until(deadline) => return Next::Spawn,
                Some(cmd) = self.rx.recv() => match cmd {
                    Cmd::Start(reply) => {
                        let _ = reply.send(self.already_running());
                    }
                    Cmd::Stop(reply) => {
                        self.complete();
                        let _ = reply.send(Ok(()));
                        let code = self.proc.lock().exit_code;
                        self.exit_triggers(code);
                        return Next::Idle;
                    }
                    Cmd::Restart(reply) => {
                        self.complete();
                        self.on_running.push(reply);
                        return Next::ManualBackoff;
                    }
                    Cmd::Shutdown(ack) => {
                        self.complete();
                        self.shutdown_acks.push(ack);
                        return Next::Idle;
                    }
                },
            }
        }
    }

    /// Between the old and the new incarnation of a manual restart (Completed).
    async fn manual_backoff(&mut self) -> Next {
        let deadline = Instant::now() + self.cfg().backoff();
        loop {
            tokio::select! {
                () = sleep_until(deadline) => return Next::NewIncarnation,
                Some(cmd) = self.rx.recv() => match cmd {
                    Cmd::Start(reply) | Cmd::Restart(reply) => self.on_running.push(reply),
                    Cmd::Stop(reply) => {
                        let _ = reply.send(self.not_running());
                    }
                    Cmd::Shutdown(ack) => {
                        self.shutdown_acks.push(ack);
                        return Next::Idle;
                    }
                },
            }
        }
    }
}

async fn sleep_or_never(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Go's `ProcessState.ExitCode()`: the code, or -1 when killed by a signal.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

/// Sends `signal` to the process group led by `pid`. Errors (group gone) are ignored.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Prints a child's output like process-compose without a TUI: `[name\t] line`,
/// and records the time of the last line (`last_activity_time`).
fn forward_output(proc: Arc<Proc>, stream: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let name = &proc.name;
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    proc.lock().last_activity = Some(Local::now());
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    let _ = writeln!(std::io::stdout().lock(), "[{name}\t] {line}");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::Project;

    /// A project from the YAML of its `processes:` map.
    fn project(processes: &str) -> Project {
        Project {
            processes: serde_yaml::from_str(processes).expect("valid yaml"),
            ..Default::default()
        }
    }

    /// The next frame of a state stream, parsed.
    async fn next_frame(sub: &mut Subscription) -> serde_json::Value {
        let frame = tokio::time::timeout(Duration::from_secs(5), sub.frames.recv())
            .await
            .expect("a frame within 5 s")
            .expect("the stream is open");
        assert_eq!(frame.last(), Some(&b'\n'));
        serde_json::from_slice(&frame).unwrap()
    }

    /// `(status, restarts, exit_code, pid, has process_start_time)` of a frame.
    fn summary(frame: &serde_json::Value) -> (String, u64, i64, u64, bool) {
        let st = &frame["state"];
        (
            st["status"].as_str().unwrap().to_owned(),
            st["restarts"].as_u64().unwrap(),
            st["exit_code"].as_i64().unwrap(),
            st["pid"].as_u64().unwrap(),
            st.get("process_start_time").is_some(),
        )
    }

    fn live(frame: &serde_json::Value) -> &serde_json::Value {
        assert!(
            frame.get("snapshot").is_none(),
            "live frames have no snapshot key: {frame}"
        );
        &frame["state"]
    }

    async fn wait_for(proc: &Proc, what: &str, pred: impl Fn(&State) -> bool) -> State {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = proc.lock().clone();
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn crash_restarts_then_completes_with_its_exit_code() {
        let (tx, mut triggers) = mpsc::unbounded_channel();
        let runner = Runner::start(
            project(
                r#"
crasher:
  command: "sleep 0.1; exit 3"
  availability: { restart: on_failure, max_restarts: 1 }
"#,
            ),
            &[],
            Version::DEFAULT,
            tx,
        )
        .unwrap();
        let proc = runner.get("crasher").unwrap();
        let first = wait_for(proc, "Running", |s| s.status == Status::Running).await;
        let restarting = wait_for(proc, "Restarting", |s| s.status == Status::Restarting).await;
        assert_eq!((restarting.exit_code, restarting.restarts), (3, 1));
        assert_eq!(restarting.health, Health::Unknown);
        let second = wait_for(proc, "Running again", |s| s.status == Status::Running).await;
        assert_ne!(second.pid, first.pid);
        assert_eq!(second.start_time, first.start_time, "same incarnation");
        assert_eq!(second.exit_code, 3, "not reset by a policy restart");
        let done = wait_for(proc, "Completed", |s| s.status == Status::Completed).await;
        assert_eq!((done.exit_code, done.restarts), (3, 1));
        assert!(done.end_time.is_some());
        let mut active = runner.active();
        active.wait_for(|n| *n == 0).await.unwrap();
        assert!(
            triggers.try_recv().is_err(),
            "on_failure does not stop the project"
        );
    }

    #[tokio::test]
    async fn stop_start_and_restart_follow_process_compose() {
        let (tx, _triggers) = mpsc::unbounded_channel();
        let runner = Runner::start(
            project(
                r#"
svc:
  command: "sleep 100"
off:
  command: "sleep 100"
  disabled: true
"#,
            ),
            &[],
            Version::DEFAULT,
            tx,
        )
        .unwrap();
        let svc = runner.get("svc").unwrap();
        let first = wait_for(svc, "Running", |s| s.status == Status::Running).await;

        assert_eq!(
            svc.request(Cmd::Start).await,
            Err("process svc is already running".into())
        );
        assert_eq!(svc.request(Cmd::Stop).await, Ok(()));
        let stopped = wait_for(svc, "Completed", |s| s.status == Status::Completed).await;
        assert_eq!(stopped.exit_code, -1, "killed by SIGTERM");
        assert_eq!(
            svc.request(Cmd::Stop).await,
            Err("process svc is not running".into())
        );

        assert_eq!(svc.request(Cmd::Start).await, Ok(()));
        let second = svc.lock().clone();
        assert_eq!(second.status, Status::Running);
        assert_ne!(second.start_time, first.start_time, "a new incarnation");
        assert_eq!(second.exit_code, 0);

        // Restart answers once the new incarnation runs, after >= 1 s of backoff.
        let began = Instant::now();
        assert_eq!(svc.request(Cmd::Restart).await, Ok(()));
        assert!(began.elapsed() >= Duration::from_secs(1));
        let third = svc.lock().clone();
        assert_eq!(
            (third.status, third.restarts, third.exit_code),
            (Status::Running, 0, 0)
        );
        assert_ne!(third.start_time, second.start_time);

        let off = runner.get("off").unwrap();
        assert_eq!(off.lock().status, Status::Disabled);
        assert_eq!(off.request(Cmd::Start).await, Ok(()));
        assert_eq!(off.lock().status, Status::Running);

        runner.shutdown().await;
        for proc in runner.processes() {
            let st = proc.lock().clone();
            assert_eq!((st.status, st.exit_code), (Status::Completed, -1));
            assert_eq!(
                killpg(Pid::from_raw(st.pid as i32), None),
                Err(nix::errno::Errno::ESRCH)
            );
        }
        assert_eq!(
            svc.request(Cmd::Start).await,
            Err("project is shutting down".into())
        );
    }

    #[tokio::test]
    async fn exit_on_failure_asks_to_stop_the_project() {
        let (tx, mut triggers) = mpsc::unbounded_channel();
        let runner = Runner::start(
            project(
                r#"
job:
  command: "exit 7"
  availability: { restart: exit_on_failure }
"#,
            ),
            &[],
            Version::DEFAULT,
            tx,
        )
        .unwrap();
        match triggers.recv().await {
            Some(Trigger::ProcessExit { name, code }) => {
                assert_eq!((name.as_str(), code), ("job", 7))
            }
            other => panic!("unexpected trigger {other:?}"),
        }
        assert_eq!(runner.exit_code(), Some(7));
        assert_eq!(runner.get("job").unwrap().lock().status, Status::Completed);
    }

    #[tokio::test]
    async fn crash_loop_frames_carry_the_old_restarts_and_a_stale_pid() {
        let (tx, _triggers) = mpsc::unbounded_channel();
        let runner = Runner::start(
            project(
                r#"
crasher:
  command: "sleep 0.2; exit 3"
  availability: { restart: on_failure, max_restarts: 2 }
keeper:
  command: "sleep 100"
"#,
            ),
            &[],
            Version::DEFAULT,
            tx,
        )
        .unwrap();
        let crasher = runner.get("crasher").unwrap();
        wait_for(crasher, "Running", |s| {
            s.status == Status::Running && s.pid != 0
        })
        .await;
        let first_pid = u64::from(crasher.lock().pid);
        let mut sub = runner.subscribe(crate::broadcast::parse_name_filter(Some("crasher")));
        let snap = next_frame(&mut sub).await;
        assert_eq!(snap["snapshot"], true);
        assert_eq!(summary(&snap), ("Running".into(), 0, 0, first_pid, true));
        assert_eq!(snap["state"]["is_running"], true, "the snapshot is fresh");

        let f = next_frame(&mut sub).await;
        assert_eq!(summary(&f), ("Restarting".into(), 0, 3, first_pid, true));
        assert_eq!(live(&f)["is_ready"], "-");
        let f = next_frame(&mut sub).await;
        assert_eq!(
            summary(&f),
            ("Running".into(), 1, 3, first_pid, true),
            "stale pid"
        );
        let second_pid = u64::from(crasher.lock().pid);
        assert_ne!(second_pid, first_pid);
        let f = next_frame(&mut sub).await;
        assert_eq!(summary(&f), ("Restarting".into(), 1, 3, second_pid, true));
        assert_eq!(
            crasher.snapshot().restarts,
            2,
            "REST already has the new count"
        );
        let f = next_frame(&mut sub).await;
        assert_eq!(summary(&f), ("Running".into(), 2, 3, second_pid, true));
        let f = next_frame(&mut sub).await;
        let third_pid = u64::from(crasher.lock().pid);
        assert_eq!(summary(&f), ("Completed".into(), 2, 3, third_pid, true));
        let st = live(&f);
        assert_eq!(st["is_running"], false);
        assert!(st.get("process_end_time").is_some());
        assert!(sub.frames.try_recv().is_err(), "nothing else");
        runner.shutdown().await;
    }

    #[tokio::test]
    async fn stop_restart_and_readiness_frames() {
        let dir = std::env::temp_dir().join(format!("pc-emulator-ready-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let (tx, _triggers) = mpsc::unbounded_channel();
        let runner = Runner::start(
            project(&format!(
                r#"
svc:
  command: "sleep 100"
probed:
  command: "sleep 100"
  readiness_probe:
    exec: {{ command: "test -e {flag}" }}
    period_seconds: 1
    failure_threshold: 100
"#,
                flag = dir.display()
            )),
            &[],
            Version::DEFAULT,
            tx,
        )
        .unwrap();
        let svc = runner.get("svc").unwrap();
        wait_for(svc, "Running", |s| s.status == Status::Running).await;
        let mut sub = runner.subscribe(crate::broadcast::parse_name_filter(Some("svc")));
        assert_eq!(next_frame(&mut sub).await["snapshot"], true);

        // Stop: Terminating, then Completed with -1.
        assert_eq!(svc.request(Cmd::Stop).await, Ok(()));
        let pid = u64::from(svc.lock().pid);
        let f = next_frame(&mut sub).await;
        assert_eq!(summary(&f), ("Terminating".into(), 0, 0, pid, true));
        let f = next_frame(&mut sub).await;
        assert_eq!(summary(&f), ("Completed".into(), 0, -1, pid, true));

        // Start: a new incarnation's Running frame has pid 0 and no start time.
        assert_eq!(svc.request(Cmd::Start).await, Ok(()));
        let f = next_frame(&mut sub).await;
        assert_eq!(summary(&f), ("Running".into(), 0, 0, 0, false));
        assert!(live(&f).get("process_end_time").is_none());

        // Manual restart: Terminating → Completed → Running (pid 0, no start time).
        let pid = u64::from(svc.lock().pid);
        assert_eq!(svc.request(Cmd::Restart).await, Ok(()));
        let seq: Vec<_> = [
            next_frame(&mut sub).await,
            next_frame(&mut sub).await,
            next_frame(&mut sub).await,
        ]
        .iter()
        .map(summary)
        .collect();
        assert_eq!(
            seq,
            [
                ("Terminating".into(), 0, 0, pid, true),
                ("Completed".into(), 0, -1, pid, true),
                ("Running".into(), 0, 0, 0, false),
            ]
        );
        assert!(sub.frames.try_recv().is_err());

        // Readiness: "Not Ready" once, then "Ready" once the flag file exists.
        let probed = runner.get("probed").unwrap();
        wait_for(probed, "Not Ready", |s| s.health == Health::NotReady).await;
        let mut sub = runner.subscribe(crate::broadcast::parse_name_filter(Some("probed")));
        assert_eq!(next_frame(&mut sub).await["state"]["is_ready"], "Not Ready");
        std::fs::write(&dir, b"").unwrap();
        let f = next_frame(&mut sub).await;
        let st = live(&f);
        assert_eq!(
            (st["status"].as_str(), st["is_ready"].as_str()),
            (Some("Running"), Some("Ready"))
        );
        assert!(st.get("process_ready_time").is_some());
        let _ = std::fs::remove_file(&dir);

        // Project shutdown: Terminating → Completed, then the stream ends.
        runner.shutdown().await;
        runner.close_streams();
        let a = next_frame(&mut sub).await;
        let b = next_frame(&mut sub).await;
        assert_eq!(live(&a)["status"], "Terminating");
        assert_eq!(live(&a)["is_ready"], "-");
        assert_eq!(
            (live(&b)["status"].as_str(), live(&b)["exit_code"].as_i64()),
            (Some("Completed"), Some(-1))
        );
        assert!(
            sub.frames.recv().await.is_none(),
            "closed after the last frame"
        );
    }

    #[tokio::test]
    async fn old_versions_omit_newer_keys() {
        let (tx, _triggers) = mpsc::unbounded_channel();
        let yaml = r#"
svc:
  command: "echo hi; sleep 100"
  success_exit_codes: [0, 3]
"#;
        for (version, times, codes) in [
            (Version::new(1, 103, 0), false, false),
            (Version::new(1, 110, 0), true, false),
            (Version::DEFAULT, true, true),
        ] {
            let runner = Runner::start(project(yaml), &[], version, tx.clone()).unwrap();
            let svc = runner.get("svc").unwrap();
            wait_for(svc, "output", |s| s.last_activity.is_some()).await;
            let json = serde_json::to_value(svc.snapshot()).unwrap();
            for key in [
                "last_activity_time",
                "process_start_time",
                "process_ready_time",
            ] {
                assert_eq!(json.get(key).is_some(), times, "{version} {key}: {json}");
            }
            assert_eq!(
                json.get("success_exit_codes").is_some(),
                codes,
                "{version}: {json}"
            );
            runner.shutdown().await;
        }
    }
}
