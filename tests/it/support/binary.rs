//! The `pc-eventd` binary as a child process, with its output read line by line.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

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
