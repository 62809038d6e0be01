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
