//! A real `nats-server -js` per test: its own port and store directory, stopped on drop.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct NatsServer {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    /// A configuration file given with `-c`, if any.
    config: Option<std::path::PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            dir,
            port: 0,
            config: None,
        };
        server.launch("-1");
        server
    }

    /// Starts a server on a free loopback port with `text` as its configuration file (`-c`),
    /// for authorization and TLS blocks. JetStream, the address, the port and the store directory
    /// still come from the command line, which takes precedence over the file.
    pub fn start_with_config(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, text).expect("write the nats-server configuration");
        let mut server = Self {
            child: None,
            dir,
            port: 0,
            config: Some(config),
        };
        server.launch("-1");
        server
    }

    fn launch(&mut self, port: &str) {
        let binary = super::peer_binary("TEST_NATS_SERVER");
        let log = self.dir.path().join("nats.log");
        let _ = std::fs::remove_file(&log);
        let mut command = Command::new(binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut text = String::new();
            if let Ok(mut file) = std::fs::File::open(&log) {
                let _ = file.read_to_string(&mut text);
            }
            let listening = text
                .lines()
                .find_map(|l| l.split("client connections on ").nth(1))
                .and_then(|addr| addr.trim().rsplit(':').next()?.parse::<u16>().ok());
            if let (Some(port), true) = (listening, text.contains("Server is ready")) {
                self.port = port;
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited ({status}) while starting; log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start within 15s; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its store stays, as after a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        self.launch(&port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
