//! Test support: real peers behind RAII guards, the daemon in-process, and a JetStream reader.

pub mod binary;
pub mod browser;
pub mod compose;
pub mod daemon;
pub mod events;
pub mod fake_compose;
pub mod fleet;
pub mod jwt;
pub mod nats;
pub mod notify_socket;

use std::time::{Duration, Instant};

/// A project of three processes in three namespaces, one of them crashing once.
pub const THREE_NAMESPACES: &str = r#"
processes:
  web:
    command: "sleep 1000"
  nats:
    command: "sleep 1000"
    namespace: infra
  crasher:
    command: "sleep 0.5; exit 3"
    namespace: jobs
"#;

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

/// Calls `attempt` every 50 ms until it succeeds and returns what it gave; panics naming `what`
/// and the last error once `timeout` has passed (a cluster electing leaders, a stream not yet
/// created).
pub async fn retry_until_ok<
    T,
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
>(
    timeout: Duration,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(err) => assert!(
                Instant::now() < deadline,
                "{what} within {timeout:?}: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A new state directory (outbox) for one daemon, or for one daemon and its restarts. Kept
/// under the target directory after the test, for a look at what was left in it.
pub fn state_dir() -> std::path::PathBuf {
    tempfile::Builder::new()
        .prefix("state-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a state directory")
        .keep()
}

/// A JetStream context on `url` that asks again after 2 s without an answer. In a cluster a
/// request that no node answers (sent while the nodes elect a leader, or whose answer was to come
/// from a node just killed) is simply dropped, and async-nats's default wait, the client's 10 s
/// request timeout, made each such request cost 10 s before the retry.
pub async fn jetstream_at(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client)
}

/// Waits until the durable consumer `name` exists on stream `PROCESS_EVENTS` (a consumer
/// command has subscribed), or `ended` says its task is gone.
pub async fn wait_for_consumer(nats_url: &str, name: &str, ended: impl Fn() -> bool) {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("connect"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = js.get_stream("PROCESS_EVENTS").await
            && stream.consumer_info(name).await.is_ok()
        {
            return;
        }
        assert!(!ended(), "the consumer's task ended before subscribing");
        assert!(Instant::now() < deadline, "consumer {name} never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Stops a child gracefully: SIGTERM, then SIGKILL if it is still there after `grace`.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Splits a raw HTTP/1.1 response (read to its end) into status code and body. A chunked body
/// is put back together: Go's servers (nats-server's monitoring, process-compose) send any body
/// over 2 KiB in chunks.
pub fn parse_response(response: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let Some(end_of_head) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (status, String::new());
    };
    let (head, body) = response.split_at(end_of_head);
    let chunked = String::from_utf8_lossy(head).lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = &body[4..];
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The data of a chunked body (`SIZE\r\nDATA\r\n` … `0\r\n\r\n`), as far as it is whole.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(end_of_size) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end_of_size])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok());
        let rest = &body[end_of_size + 2..];
        match size {
            Some(size) if size > 0 && size <= rest.len() => {
                data.extend_from_slice(&rest[..size]);
                body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
            }
            _ => break,
        }
    }
    data
}

/// `GET path` on 127.0.0.1:`port` with `Connection: close`.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let (status, _, body) = http_get_with(port, path, &[]).await?;
    Ok((status, body))
}

/// `GET path` with more request headers; returns the status, the response's head and its body.
pub async fn http_get_with(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let (status, body) = parse_response(&response);
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    Ok((status, head, body))
}

/// Polls `GET path` on 127.0.0.1:`port` until it answers `code` (20 s at most); returns the body.
pub async fn wait_for_http(port: u16, path: &str, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        match http_get(port, path).await {
            Ok((status, body)) if status == code => return body,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("GET {path} never answered {code}; last: {last:?}");
}

/// The usual arrangement: a nats-server, process-compose running `project`, the daemon between
/// them, and a reader of the stream.
pub struct Stack {
    pub log: events::EventLog,
    pub daemon: Option<daemon::Daemon>,
    pub pc: compose::ProcessCompose,
    /// Held for its lifetime: dropping it stops the server.
    nats: nats::NatsServer,
}

impl Stack {
    /// The arrangement against a server of `release`.
    pub async fn start_on(release: compose::Release, project: &str) -> Self {
        Self::start_configured(release, project, |_| {}).await
    }

    /// Like [`Stack::start_on`], with the daemon's configuration changed by `configure`.
    pub async fn start_configured(
        release: compose::Release,
        project: &str,
        configure: impl FnOnce(&mut pc_eventd::Config),
    ) -> Self {
        let nats = nats::NatsServer::start();
        let options = compose::Options {
            release,
            ..compose::Options::default()
        };
        let pc = compose::ProcessCompose::start_with(project, options).await;
        let mut config = daemon::config(&pc.url(), &nats.url());
        configure(&mut config);
        let daemon = daemon::Daemon::spawn(config);
        let log = events::EventLog::open(&nats.url()).await;
        Self {
            log,
            daemon: Some(daemon),
            pc,
            nats,
        }
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// Stops the daemon (it drains its outbox into the stream), checks that it ended cleanly,
    /// and reads the stream to its end: the log then holds everything the daemon published.
    pub async fn finish(&mut self) {
        self.stop_daemon().await;
        self.log.read_to_end().await;
    }

    /// Waits until the daemon's outbox is empty (all it observed is in the stream), then reads
    /// the stream to its end; the daemon keeps running. For a project whose processes have
    /// come to rest, the log then holds the whole story.
    pub async fn caught_up(&mut self) {
        let status = self.daemon.as_ref().expect("running").status.clone();
        assert!(
            eventually(Duration::from_secs(30), || {
                status.metrics.outbox_messages.get() == 0
            })
            .await,
            "the daemon's outbox never emptied"
        );
        self.log.read_to_end().await;
    }

    /// Stops the daemon, if [`Stack::finish`] has not, and checks that it ended cleanly.
    pub async fn stop(mut self) {
        self.stop_daemon().await;
    }

    /// Stops the daemon and checks that it ended cleanly; the peers keep running.
    pub async fn stop_daemon(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().await.expect("the daemon ends without error");
        }
    }
}
