//! Test support: real peers behind RAII guards, the daemon in-process, and a JetStream reader.

pub mod compose;
pub mod daemon;
pub mod events;
pub mod nats;

use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The path of a peer binary named by `var`, as set by scripts/install-peers.sh.
pub fn peer_binary(var: &str) -> std::path::PathBuf {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => path.into(),
        _ => panic!(
            "{var} is not set: run the tests through scripts/test.sh, or \
             `source \"$(scripts/install-peers.sh)\"` first"
        ),
    }
}

/// The usual arrangement: a nats-server, process-compose running `project`, the daemon between
/// them, and a reader of the stream.
pub struct Stack {
    pub log: events::EventLog,
    pub daemon: Option<daemon::Daemon>,
    pub pc: compose::ProcessCompose,
    /// Held for its lifetime: dropping it stops the server.
    _nats: nats::NatsServer,
}

impl Stack {
    pub async fn start(project: &str) -> Self {
        let nats = nats::NatsServer::start();
        let pc = compose::ProcessCompose::start(project).await;
        let daemon = daemon::Daemon::spawn(daemon::config(&pc.url(), &nats.url()));
        let log = events::EventLog::open(&nats.url()).await;
        Self {
            log,
            daemon: Some(daemon),
            pc,
            _nats: nats,
        }
    }

    /// Stops the daemon and checks that it ended cleanly.
    pub async fn stop(mut self) {
        let daemon = self.daemon.take().expect("running");
        daemon.stop().await.expect("the daemon ends without error");
    }
}
