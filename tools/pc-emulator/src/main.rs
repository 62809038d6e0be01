//! pc-emulator: an emulator of process-compose's REST API (not process-compose).
//!
//! It accepts process-compose's command line and (a subset of) its project
//! YAML, runs every process as a real `bash -c` child in its own process group,
//! and serves the v1.122.0 REST API and WebSocket state stream with the same
//! JSON and state machine, for tests on machines where the real binary cannot
//! be installed. `--emulate-version` makes it look like an older release.
#![forbid(unsafe_code)]

mod api;
mod broadcast;
mod cli;
mod logging;
mod probe;
mod project;
mod state;
mod supervisor;
mod version;
mod ws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::api::{Api, Listener, ProjectInfo};
use crate::cli::Cli;
use crate::supervisor::{Runner, Trigger};

/// process-compose refuses shorter API tokens.
const MIN_TOKEN_LEN: usize = 20;

fn main() {
    let cli = Cli::parse();
    if let Err(err) = logging::init(cli.log_file.as_deref()) {
        eprintln!("pc-emulator: cannot open the log file: {err}");
        std::process::exit(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pc-emulator: cannot start the runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pc-emulator: error: {err:#}");
            if logging::to_file() {
                warn!("error: {err:#}");
            }
            1
        }
    };
    info!("pc-emulator exiting with code {code}");
    // Like Go's os.Exit: -1 becomes 255.
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let token = api_token(&cli)?;
    let project = project::load(&cli.config)?;
    let info = project_info(&project);
    for (name, proc) in &project.processes {
        if let Some(probe) = &proc.readiness_probe
            && probe.exec.is_none()
        {
            warn!("[{name}] only `exec` readiness probes are emulated; this one never runs");
        }
    }

    // Register signal handlers before anything is started.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let (listener, listening_on) = bind(&cli).await?;
    let (trigger_tx, mut triggers) = mpsc::unbounded_channel();
    let version = cli.emulate_version;
    let runner = Runner::start(project, cli.only(), version, trigger_tx)?;

    eprintln!(
        "pc-emulator: listening on {listening_on} \
         (an emulator of process-compose {version}'s REST API, not process-compose)"
    );
    if logging::to_file() {
        info!(
            "pc-emulator (an emulator of process-compose {version}'s REST API, not process-compose) \
             listening on {listening_on}"
        );
    }

    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let api = Arc::new(Api {
        runner: runner.clone(),
        token,
        version,
        project: info,
        streams: tokio_util::task::TaskTracker::new(),
    });
    let server = tokio::spawn(api::serve(listener, api, async {
        let _ = server_stopped.await;
    }));

    let mut active = runner.active();
    let mut all_ended = false;
    let reason = loop {
        tokio::select! {
            biased;
            _ = sigterm.recv() => break "caught SIGTERM".to_owned(),
            _ = sigint.recv() => break "caught SIGINT".to_owned(),
            _ = sighup.recv() => break "caught SIGHUP".to_owned(),
            Some(trigger) = triggers.recv() => break match trigger {
                Trigger::ProjectStop => "project stop requested".to_owned(),
                Trigger::ProcessExit { name, code } => {
                    format!("process {name} ended with exit code {code}")
                }
            },
            _ = active.wait_for(|n| *n == 0), if !all_ended => {
                all_ended = true;
                if cli.keep_project {
                    info!("project completed");
                    println!("Project Completed. Press Ctrl+C to quit");
                } else {
                    break "all processes ended".to_owned();
                }
            }
        }
    };
    info!("shutting down: {reason}");

    let shutdown = runner.shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = sigterm.recv() => force_kill(&runner),
            _ = sigint.recv() => force_kill(&runner),
        }
    }

    // The state streams send their last frames (Terminating → Completed),
    // then their connections drop.
    runner.close_streams();
    let _ = stop_server.send(());
    let _ = server.await;
    info!("project stopped");
    Ok(runner.exit_code().unwrap_or(0))
}

fn force_kill(runner: &Runner) {
    warn!("second signal: killing every process group");
    runner.kill_all();
}

/// What `GET /project/state` reports about the project itself.
fn project_info(project: &project::Project) -> ProjectInfo {
    let project_name = project.name.clone().unwrap_or_else(|| {
        std::env::current_dir()
            .ok()
            .and_then(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default()
    });
    let user_name = ["USER", "LOGNAME"]
        .iter()
        .find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|user| user.name)
        })
        .unwrap_or_default();
    ProjectInfo {
        file_names: project
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        project_name,
        user_name,
        started: chrono::Local::now(),
        started_at: std::time::Instant::now(),
    }
}

/// `PC_API_TOKEN`, else the trimmed contents of `--token-file` / `PC_API_TOKEN_PATH`.
fn api_token(cli: &Cli) -> anyhow::Result<Option<String>> {
    let token = match std::env::var("PC_API_TOKEN") {
        Ok(token) if !token.is_empty() => Some(token),
        _ => match &cli.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        },
    };
    if let Some(token) = &token
        && token.len() < MIN_TOKEN_LEN
    {
        bail!("the API token must be at least {MIN_TOKEN_LEN} characters long");
    }
    Ok(token)
}

async fn bind(cli: &Cli) -> anyhow::Result<(Listener, String)> {
    if let Some(path) = cli.socket_path() {
        remove_stale_socket(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on unix socket {}", path.display()))?;
        let shown = path.display().to_string();
        return Ok((Listener::Unix(listener, path), shown));
    }
    let addr = resolve(&cli.address, cli.port).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let shown = listener.local_addr().map_or(addr, |a| a).to_string();
    Ok((Listener::Tcp(listener), shown))
}

fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        let _ = std::fs::remove_file(path);
    }
}

async fn resolve(address: &str, port: u16) -> anyhow::Result<SocketAddr> {
    if address.is_empty() || address == "localhost" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((address, port))
        .await
        .with_context(|| format!("cannot resolve address {address}"))?
        .collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .with_context(|| format!("address {address} resolves to nothing"))
}
