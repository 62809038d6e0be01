//! A real process-compose per test (one of the two pinned releases that scripts/install-peers.sh
//! installs), with a temp project file, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to reach it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve on a unix socket instead of a TCP port.
    pub unix_socket: bool,
    /// Require this API token.
    pub token: Option<String>,
    /// Which release runs.
    pub release: Release,
}

/// The two pinned releases of process-compose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Release {
    /// v1.122.0, with the WebSocket state stream.
    #[default]
    Current,
    /// v1.103.0, the newest release before the state stream: polling only.
    BeforeStream,
}

impl Release {
    fn binary(self) -> PathBuf {
        super::peer_binary(match self {
            Release::Current => "TEST_PROCESS_COMPOSE",
            Release::BeforeStream => "TEST_PROCESS_COMPOSE_POLL",
        })
    }
}

pub struct ProcessCompose {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    socket: Option<PathBuf>,
    options: Options,
}

impl ProcessCompose {
    /// Starts `project` (process-compose YAML) on a free loopback port.
    pub async fn start(project: &str) -> Self {
        Self::start_with(project, Options::default()).await
    }

    pub async fn start_with(project: &str, options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Scripts in the project may use $WORK for their own files.
        let project = project.replace("$WORK", &dir.path().display().to_string());
        std::fs::write(dir.path().join("process-compose.yaml"), project).expect("write project");
        let socket = options.unix_socket.then(|| dir.path().join("pc.sock"));
        let mut pc = Self {
            child: None,
            dir,
            port: super::free_port(),
            socket,
            options,
        };
        pc.launch().await;
        pc
    }

    async fn launch(&mut self) {
        let binary = self.options.release.binary();
        let dir = self.dir.path();
        let mut command = Command::new(binary);
        command
            .arg("up")
            .arg("-f")
            .arg(dir.join("process-compose.yaml"))
            .arg("-t=false")
            .arg("--keep-project")
            .arg("-L")
            .arg(dir.join("process-compose.log"))
            .current_dir(dir)
            .env_remove("PC_API_TOKEN")
            .env_remove("PC_SOCKET_PATH")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.socket {
            Some(path) => command.arg("-U").arg("-u").arg(path),
            None => command
                .args(["--address", "127.0.0.1", "-p"])
                .arg(self.port.to_string()),
        };
        if let Some(token) = &self.options.token {
            command.env("PC_API_TOKEN", token);
        }
        self.child = Some(command.spawn().expect("start process-compose"));
        self.wait_live().await;
    }

    /// Shuts it down: its processes stop, and it is gone until [`ProcessCompose::start_again`].
    pub fn stop(&mut self) {
        self.shut_down();
    }

    /// Starts it again, on the same address with the same project.
    pub async fn start_again(&mut self) {
        self.launch().await;
    }

    async fn wait_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .request("GET", "/live")
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "process-compose did not answer /live within 20s; log:\n{}",
            std::fs::read_to_string(self.dir.path().join("process-compose.log"))
                .unwrap_or_default()
        );
    }

    /// The base URL (TCP mode).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket(&self) -> Option<&std::path::Path> {
        self.socket.as_deref()
    }

    /// The project's scratch directory (`$WORK` in project scripts).
    pub fn work_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Waits until `GET /process/{name}` reports `status`.
    pub async fn wait_for_status(&self, name: &str, status: &str, timeout: Duration) {
        self.wait_for_field(name, "status", status, timeout).await;
    }

    /// Waits until `GET /process/{name}` reports `value` for the string field `field`.
    pub async fn wait_for_field(&self, name: &str, field: &str, value: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let wanted = format!("\"{field}\":\"{value}\"");
        while Instant::now() < deadline {
            if let Ok((200, body)) = self.request("GET", &format!("/process/{name}")).await
                && body.contains(&wanted)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name} never reported {field} {value}");
    }

    pub async fn restart_process(&self, name: &str) {
        self.expect_ok("POST", &format!("/process/restart/{name}"))
            .await;
    }

    pub async fn stop_process(&self, name: &str) {
        self.expect_ok("PATCH", &format!("/process/stop/{name}"))
            .await;
    }

    pub async fn start_process(&self, name: &str) {
        self.expect_ok("POST", &format!("/process/start/{name}"))
            .await;
    }

    async fn expect_ok(&self, method: &str, path: &str) {
        let (status, body) = self.request(method, path).await.expect("request");
        assert_eq!(status, 200, "{method} {path}: {body}");
    }

    /// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
    pub async fn request(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let token = self
            .options
            .token
            .as_ref()
            .map(|t| format!("X-PC-Token-Key: {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{token}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut response = Vec::new();
        match &self.socket {
            Some(socket) => {
                let mut stream = tokio::net::UnixStream::connect(socket).await?;
                stream.write_all(head.as_bytes()).await?;
                stream.read_to_end(&mut response).await?;
            }
            None => {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
                stream.write_all(head.as_bytes()).await?;
                stream.read_to_end(&mut response).await?;
            }
        }
        Ok(super::parse_response(&response))
    }
}

impl ProcessCompose {
    fn shut_down(&mut self) {
        // A graceful stop lets it stop its own processes; a kill is the backstop.
        if let Some(mut child) = self.child.take() {
            super::terminate(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for ProcessCompose {
    fn drop(&mut self) {
        self.shut_down();
    }
}
