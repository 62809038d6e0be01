//! The `pc-eventd` binary: `run` with the seed's flags, `watch` filters, `config check`.

use std::process::Stdio;
use std::time::Duration;

use pc_eventd_events::event::{EventType::*, LifecycleEvent};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::compose::ProcessCompose;
use crate::support::events::EventLog;
use crate::support::nats::NatsServer;

/// The built binary, run with a clean `PC_EVENTD_*` environment.
pub struct Binary {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    /// Reads stdout; aborting it closes the pipe.
    stdout_reader: tokio::task::AbortHandle,
    stderr: mpsc::UnboundedReceiver<String>,
    pub stderr_seen: Vec<String>,
}

impl Binary {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pc-eventd"));
        for (key, _) in std::env::vars() {
            if key.starts_with("PC_EVENTD_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        // Each daemon gets its own health port unless the test names one.
        let health = format!("127.0.0.1:{}", crate::support::free_port());
        command.env("PC_EVENTD_HEALTH__LISTEN", &health);
        // And its own state directory unless the test names one (to restart into it).
        command.env("PC_EVENTD_DAEMON__STATE_DIR", crate::support::state_dir());
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run pc-eventd");
        let (stdout, stdout_reader) = lines(child.stdout.take().unwrap());
        let (stderr, _) = lines(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stdout_reader,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// Runs to completion: (exit code, stdout, stderr).
    pub async fn output(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let mut binary = Self::spawn_with_env(args, env);
        let status = tokio::time::timeout(Duration::from_secs(20), binary.child.wait())
            .await
            .expect("pc-eventd ends within 20s")
            .unwrap();
        let mut stdout = String::new();
        while let Some(line) = binary.stdout.recv().await {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        let mut stderr = String::new();
        while let Some(line) = binary.stderr.recv().await {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        (status.code(), stdout, stderr)
    }

    pub async fn stderr_line_containing(&mut self, needle: &str, timeout: Duration) -> String {
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = self.stderr.recv().await {
                self.stderr_seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no stderr line with {needle:?}; saw:\n{}",
                self.stderr_seen.join("\n")
            ),
        }
    }

    /// Stdout lines until `done` holds for the lines so far; panics after `timeout`.
    pub async fn stdout_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let result = tokio::time::timeout(timeout, async {
            while !done(&lines) {
                match self.stdout.recv().await {
                    Some(line) => lines.push(line),
                    None => return,
                }
            }
        })
        .await;
        assert!(
            result.is_ok() && done(&lines),
            "stdout so far:\n{}",
            lines.join("\n")
        );
        lines
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Everything it printed on stderr that no one has read yet, once it has exited.
    pub async fn rest_of_stderr(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some(line) = self.stderr.recv().await {
            rest.push(line);
        }
        rest
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("its status can be read")
            .is_none()
    }

    /// Closes its stdout, as a reader that has what it wanted does (`| head -1`).
    pub fn close_stdout(&mut self) {
        self.stdout_reader.abort();
    }

    /// Waits for it to exit (after a signal), for up to 10 s, and returns its exit code.
    pub async fn exited(&mut self) -> Option<i32> {
        self.exited_within(Duration::from_secs(10)).await
    }

    /// Waits for it to exit for up to `timeout`, and returns its exit code.
    pub async fn exited_within(&mut self, timeout: Duration) -> Option<i32> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("exits within {timeout:?}"))
            .unwrap()
            .code()
    }

    /// Sends SIGTERM and returns the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits within 10s of SIGTERM")
            .unwrap()
            .code()
    }
}

fn lines(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> (mpsc::UnboundedReceiver<String>, tokio::task::AbortHandle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (rx, reader.abort_handle())
}

#[tokio::test]
async fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pc-eventd.toml");
    std::fs::write(
        &file,
        "[process_compose]\ntoken = \"super-secret-token-value-123\"\n[nats]\nurl = \"nats://10.0.0.1:4222\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = Binary::output(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[("PC_EVENTD_NATS__STREAM__REPLICAS", "3")],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("url = \"nats://10.0.0.1:4222\""),
        "{stdout}"
    );
    assert!(stdout.contains("replicas = 3"), "{stdout}");
    assert!(stdout.contains("token = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("super-secret") && !stderr.contains("super-secret"));
}

#[tokio::test]
async fn config_errors_name_the_key_and_source_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[nats]\nurll = \"nats://x\"\n").unwrap();
    let file = file.to_str().unwrap();

    let (code, _, stderr) = Binary::output(&["config", "check", "--config", file], &[]).await;
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("nats.urll") && stderr.contains(file),
        "{stderr}"
    );

    // the daemon refuses the same file the same way
    let (code, _, stderr) = Binary::output(&["run", "--config", file], &[]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("nats.urll"), "{stderr}");

    let (code, _, stderr) = Binary::output(
        &["config", "check"],
        &[("PC_EVENTD_PROCESS_COMPOSE__POLL_INTERVAL", "whenever")],
    )
    .await;
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("PC_EVENTD_PROCESS_COMPOSE__POLL_INTERVAL"),
        "{stderr}"
    );

    let (code, _, stderr) = Binary::output(&["watch", "--config", "/nonexistent.toml"], &[]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_the_seed_flags_and_stops_cleanly_on_sigterm() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let mut daemon = Binary::spawn(&[
        "run",
        "--compose-port",
        &pc.port().to_string(),
        "--nats-url",
        &nats.url(),
        "--poll-interval",
        "200ms",
    ]);
    let mut log = EventLog::open(&nats.url()).await;
    let started = log.wait_for("web", Started).await;
    assert_eq!(started.source, pc.url(), "the source defaults to the URL");
    assert_eq!(daemon.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_by_process_type_and_namespace() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(crate::support::THREE_NAMESPACES).await;
    let url = nats.url();
    let mut by_name_json =
        Binary::spawn(&["watch", "--nats-url", &url, "--process", "nats", "--json"]);
    let mut by_type = Binary::spawn(&["watch", "--nats-url", &url, "--type", "crashed"]);
    let mut by_ns_name = Binary::spawn(&["watch", "--nats-url", &url, "--process", "default/web"]);
    let mut by_namespace = Binary::spawn(&["watch", "--nats-url", &url, "--namespace", "jobs"]);
    for watcher in [
        &mut by_name_json,
        &mut by_type,
        &mut by_ns_name,
        &mut by_namespace,
    ] {
        watcher
            .stderr_line_containing("Watching events", Duration::from_secs(10))
            .await;
    }
    let daemon =
        crate::support::daemon::Daemon::spawn(crate::support::daemon::config(&pc.url(), &url));
    let long = Duration::from_secs(20);

    // a bare name matches it in its namespace (infra), and --json prints whole events
    let lines = by_name_json
        .stdout_until(long, |l| {
            l.iter().any(|l| l.contains(r#""type":"started""#))
        })
        .await;
    for line in &lines {
        let event: LifecycleEvent = serde_json::from_str(line).expect("one JSON event per line");
        assert_eq!(
            (event.process.as_str(), event.namespace.as_str()),
            ("nats", "infra")
        );
    }

    // a type matches every namespace; stdout is a pipe, so no icons or colours
    let lines = by_type.stdout_until(long, |l| !l.is_empty()).await;
    assert!(
        lines[0].ends_with(" ERROR jobs/crasher crashed (exit=3)"),
        "{lines:?}"
    );
    assert_eq!(
        lines[0].len(),
        "09:53:31.123 ERROR jobs/crasher crashed (exit=3)".len()
    );

    // NS/NAME, in the seed's text format
    let lines = by_ns_name
        .stdout_until(long, |l| l.iter().any(|l| l.ends_with(" started")))
        .await;
    assert!(
        lines.iter().all(|l| l.contains(" default/web ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" INFO  default/web started")),
        "{lines:?}"
    );

    let lines = by_namespace
        .stdout_until(long, |l| l.iter().any(|l| l.contains("crashed")))
        .await;
    assert!(
        lines.iter().all(|l| l.contains(" jobs/crasher ")),
        "{lines:?}"
    );

    daemon.stop().await.unwrap();
    for mut watcher in [by_name_json, by_type, by_ns_name, by_namespace] {
        assert_eq!(
            watcher.terminate().await,
            Some(0),
            "watch exits 0 on SIGTERM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let compose_port = pc.port().to_string();
    let nats_url = nats.url();
    let compose = ["--compose-port", &compose_port];
    let bus = ["--nats-url", nats_url.as_str()];
    let mut daemon = Binary::spawn(&[&["run"][..], &compose, &bus].concat());
    let mut log = EventLog::open(&nats_url).await;
    log.wait_for("web", Started).await;
    let mut remediate = Binary::spawn(&[&["remediate"][..], &compose, &bus].concat());
    // (no alert is due: nothing crashes, so the URL is never called)
    let hook = ["--url", "http://127.0.0.1:9/hook"];
    let mut alert = Binary::spawn(&[&["alert"][..], &bus, &hook].concat());
    remediate
        .stderr_line_containing("remediating", Duration::from_secs(20))
        .await;
    alert
        .stderr_line_containing("alerting", Duration::from_secs(20))
        .await;
    let mut written = Vec::new();
    for binary in [&mut daemon, &mut remediate, &mut alert] {
        assert_eq!(binary.terminate().await, Some(0));
        written.append(&mut binary.stderr_seen);
        written.extend(binary.rest_of_stderr().await);
    }
    assert!(
        written.iter().any(|line| line.contains(" INFO ")),
        "{written:?}"
    );
    assert!(
        written.iter().all(|line| !line.contains('\x1b')),
        "escape codes in a log written to a pipe: {written:?}"
    );
}

#[tokio::test]
async fn help_and_completions() {
    let (code, stdout, _) = Binary::output(&["--help"], &[]).await;
    assert_eq!(code, Some(0));
    for command in ["run", "watch", "config", "completions"] {
        assert!(
            stdout.contains(&format!("  {command} ")),
            "{command} missing:\n{stdout}"
        );
    }
    let (code, stdout, _) = Binary::output(&["run", "--help"], &[]).await;
    assert_eq!(code, Some(0));
    for flag in [
        "--compose-port",
        "--nats-url",
        "--poll-interval",
        "--config",
        "SIGHUP",
    ] {
        assert!(stdout.contains(flag), "{flag} missing:\n{stdout}");
    }
    let (code, stdout, _) = Binary::output(&["completions", "bash"], &[]).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("complete -F") && stdout.contains("pc-eventd"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_its_reader_goes_away() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let daemon = crate::support::daemon::Daemon::spawn(crate::support::daemon::config(
        &pc.url(),
        &nats.url(),
    ));
    EventLog::open(&nats.url())
        .await
        .wait_for("web", Started)
        .await;
    // `watch --all | head -1`: the replay's first line, then the reader is gone, and nothing
    // else happens (web sleeps on), so no later line would tell it.
    let mut watch = Binary::spawn(&["watch", "--all", "--nats-url", &nats.url()]);
    watch
        .stdout_until(Duration::from_secs(20), |lines| !lines.is_empty())
        .await;
    watch.close_stdout();
    assert_eq!(watch.exited().await, Some(0));
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gives_up_on_nats_that_stays_dead() {
    // At start: nothing listens.
    let nobody = format!("nats://127.0.0.1:{}", crate::support::free_port());
    let (code, _, stderr) = Binary::output(
        &["watch", "--nats-url", &nobody, "--give-up-after", "2s"],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("retrying for up to 2s"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no answer from NATS at {nobody} for 2s; giving up"
        )),
        "{stderr}"
    );
    // Later: the server goes away and stays away.
    let mut nats = NatsServer::start();
    let url = nats.url();
    let mut watch = Binary::spawn(&["watch", "--nats-url", &url, "--give-up-after", "2s"]);
    watch
        .stderr_line_containing("Watching events", Duration::from_secs(20))
        .await;
    nats.stop();
    assert_eq!(watch.exited().await, Some(1));
    let said = watch.rest_of_stderr().await.join("\n");
    assert!(
        said.contains(&format!("no answer from NATS at {url} for 2s; giving up")),
        "{said}"
    );
}
