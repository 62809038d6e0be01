//! A stand-in for systemd's notification socket: a unix datagram socket the daemon writes
//! `READY=1`, `STATUS=…`, `WATCHDOG=1`… to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::mpsc;

pub struct NotifySocket {
    path: PathBuf,
    messages: mpsc::UnboundedReceiver<(Instant, String)>,
    /// Every datagram received so far, with its arrival time.
    pub seen: Vec<(Instant, String)>,
    _dir: TempDir,
}

impl NotifySocket {
    pub fn bind() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        let (tx, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send((Instant::now(), text)).is_err() {
                    return;
                }
            }
        });
        Self {
            path,
            messages,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a datagram containing `needle` that arrives after this call, and returns it.
    pub async fn next_containing(&mut self, needle: &str, timeout: Duration) -> String {
        let found = tokio::time::timeout(timeout, async {
            while let Some((at, message)) = self.messages.recv().await {
                self.seen.push((at, message.clone()));
                if message.contains(needle) {
                    return Some(message);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(message)) => message,
            _ => panic!("no notification with {needle:?}; saw:\n{:#?}", self.seen),
        }
    }

    /// Collects whatever arrives for `window` (to show that something does *not* arrive).
    pub async fn collect_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(Some((at, message))) =
            tokio::time::timeout_at(deadline, self.messages.recv()).await
        {
            self.seen.push((at, message.clone()));
            got.push(message);
        }
        got
    }

    /// The lifecycle notifications received, in order (READY, RELOADING, STOPPING).
    pub fn lifecycle(&self) -> Vec<&str> {
        self.seen
            .iter()
            .flat_map(|(_, m)| m.lines())
            .filter(|l| matches!(*l, "READY=1" | "RELOADING=1" | "STOPPING=1"))
            .collect()
    }
}
