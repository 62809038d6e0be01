//! nats-server in the tests: [`Process`], the one place a nats-server is spawned, and
//! [`NatsServer`], a standalone `nats-server -js` per test with its own port and store directory.
//! The hub cluster and the leaf nodes of `fleet.rs` are Processes too.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where a started nats-server listens, as its log says.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub client: u16,
    /// The leaf node listener, if it has one.
    pub leafnode: Option<u16>,
    /// The monitoring (HTTP) listener, if it has one.
    pub monitor: Option<u16>,
}

/// One running nats-server, killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    pub listening: Listening,
}

impl Process {
    /// Runs nats-server with `args` and `env`, logging to `log` (replaced), and waits until it
    /// is ready; panics with the log if it exits first or is not ready within 15 s.
    pub fn start(args: &[OsString], env: &[(&str, String)], log: &Path) -> Self {
        let _ = std::fs::remove_file(log);
        let mut child = Command::new(super::peer_binary("TEST_NATS_SERVER"))
            .args(args)
            .arg("-l")
            .arg(log)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut text = String::new();
            if let Ok(mut file) = std::fs::File::open(log) {
                let _ = file.read_to_string(&mut text);
            }
            let port = |listener: &str| {
                text.lines()
                    .find_map(|l| l.split(listener).nth(1))
                    .and_then(|addr| addr.trim().rsplit(':').next()?.parse::<u16>().ok())
            };
            if let (Some(client), true) = (
                port("client connections on "),
                text.contains("Server is ready"),
            ) {
                let listening = Listening {
                    client,
                    leafnode: port("leafnode connections on "),
                    monitor: port("http monitor on "),
                };
                return Self { child, listening };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nats-server exited ({status}) while starting; log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start within 15s; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct NatsServer {
    process: Option<Process>,
    dir: TempDir,
    port: u16,
    /// A configuration file given with `-c`, if any.
    config: Option<std::path::PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launched(dir, None)
    }

    /// Starts a server on a free loopback port with `text` as its configuration file (`-c`),
    /// for authorization and TLS blocks. JetStream, the address, the port and the store directory
    /// still come from the command line, which takes precedence over the file.
    pub fn start_with_config(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, text).expect("write the nats-server configuration");
        Self::launched(dir, Some(config))
    }

    fn launched(dir: TempDir, config: Option<std::path::PathBuf>) -> Self {
        let mut server = Self {
            process: None,
            dir,
            port: 0,
            config,
        };
        server.launch("-1");
        server
    }

    fn launch(&mut self, port: &str) {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(config) = &self.config {
            args.extend(["-c".into(), config.into()]);
        }
        args.extend(["-js", "-a", "127.0.0.1", "-p", port, "-sd"].map(OsString::from));
        args.push(self.dir.path().join("store").into());
        let process = Process::start(&args, &[], &self.dir.path().join("nats.log"));
        self.port = process.listening.client;
        self.process = Some(process);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its store stays, as after a crash).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        self.launch(&port);
    }
}
