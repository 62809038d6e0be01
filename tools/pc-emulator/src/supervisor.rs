//! The per-process state machine (process-compose's `Process.run()` loop).
//!
//! Every process has one supervisor task. It owns the child and is the only
//! writer of the status; the API talks to it through [`Cmd`] messages and reads
//! the state under the process's mutex. The readiness probe task only writes
//! `is_ready`, and asks the supervisor to stop the child when it gives up.

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

use crate::project::{ProcessConfig, Project, RestartPolicy};
use crate::state::{Health, ProcessStateJson, State, Status};
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
}

impl Proc {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> ProcessStateJson {
        self.lock().to_json(&self.name, &self.cfg)
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
        let mut st = self.lock();
        if st.run_id != run_id || st.status != Status::Running || st.health == health {
            return;
        }
        st.health = health;
        if health == Health::Ready && st.ready_time.is_none() {
            st.ready_time = Some(Local::now());
        }
        drop(st);
        info!("[{}] readiness: {:?}", self.name, health);
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
}

impl Runner {
    /// Creates the processes and spawns one supervisor task each. Every
    /// enabled process starts at once (or only those in `only`, when given;
    /// the others stay Pending).
    pub fn start(
        project: Project,
        only: &[String],
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
        Ok(Arc::new(Runner { procs, ctx }))
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
    }

    /// Status Completed (end of an incarnation).
    fn complete(&mut self) {
        let mut st = self.proc.lock();
        st.status = Status::Completed;
        st.end_time = Some(Local::now());
        if st.run_ended.is_none() {
            st.run_ended = Some(std::time::Instant::now());
        }
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
            forward_output(self.name().to_owned(), out);
        }
        if let Some(err) = child.stderr.take() {
            forward_output(self.name().to_owned(), err);
        }
        Ok(child)
    }

    /// Runs one child until it exits, handling requests meanwhile.
    async fn spawn_and_wait(&mut self) -> Next {
        let mut child = match self.spawn_child() {
            Ok(child) => child,
            Err(err) => {
                warn!("[{}] cannot start: {err}", self.name());
                {
                    let mut st = self.proc.lock();
                    st.status = Status::Error;
                    st.end_time = Some(Local::now());
                }
                // process-compose answers start/restart before the exec happens.
                for reply in self.on_running.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                return Next::Idle;
            }
        };
        let pid = child.id().unwrap_or(0);
        let run_id = {
            let mut st = self.proc.lock();
            st.status = Status::Running;
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
        {
            let mut st = self.proc.lock();
            st.status = Status::Terminating;
            st.health = Health::Unknown;
        }
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
        {
            let mut st = self.proc.lock();
            if wants_restart
                && (availability.max_restarts == 0 || st.restarts < availability.max_restarts)
            {
                st.status = Status::Restarting;
                st.health = Health::Unknown;
                // process-compose publishes Restarting with the old counter and
                // increments it right after, before the backoff sleep.
                st.restarts += 1;
                info!(
                    "[{}] restarting in {:?}, restarts: {}",
                    self.proc.name,
                    self.proc.cfg.backoff(),
                    st.restarts
                );
                return Next::PolicyBackoff;
            }
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

/// Prints a child's output like process-compose without a TUI: `[name\t] line`.
fn forward_output(name: String, stream: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
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
            environment: Vec::new(),
            processes: serde_yaml::from_str(processes).expect("valid yaml"),
        }
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
}
