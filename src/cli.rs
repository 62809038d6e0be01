//! The command line: `run`, `watch`, `remediate`, `alert`, `dashboard`, `config check` and
//! `completions`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use pc_eventd_events::consumer::Filter;
use pc_eventd_events::event::{EventType, Severity};
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commands::watch::{self, Output, Replay};
use crate::commands::{alert, dashboard, remediate};
use crate::config::{Config, ConfigError, Overrides, Sources};
use crate::daemon::{ConfigLoader, Control, Daemon, DaemonError};
use crate::ops::logging::LogFormat;
use crate::ops::status::Status;

/// sysexits' EX_CONFIG: the configuration is wrong.
pub(crate) const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "pc-eventd",
    version,
    about = "Publishes process-compose lifecycle events to NATS JetStream"
)]
pub struct Cli {
    /// Configuration file [default: /etc/pc-eventd.toml, if it exists]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch process-compose and publish lifecycle events (the daemon)
    #[command(
        alias = "adapter",
        long_about = "Watch process-compose and publish lifecycle events (the daemon).\n\n\
            Configuration layers, lowest first: built-in defaults, /etc/pc-eventd.toml (or \
            --config FILE), PC_EVENTD_* environment variables (nested keys joined with __, e.g. \
            PC_EVENTD_NATS__URL), then these flags. A bad configuration exits 78.\n\n\
            Signals: SIGHUP reloads the configuration (a bad one keeps the old), SIGTERM and \
            SIGINT stop after publishing what is pending. Under systemd it reports READY=1, \
            STATUS=, RELOADING=1, STOPPING=1 and pets the watchdog. /healthz, /readyz and \
            /metrics are served on 127.0.0.1:9470 unless [health] says otherwise."
    )]
    Run(RunArgs),
    /// Print live events from NATS
    Watch(WatchArgs),
    /// Restart processes that crash or go unhealthy, within a policy [config: remediate]
    #[command(
        long_about = "Restart processes that crash or go unhealthy, within a policy.\n\n\
            Reads crashed/unhealthy events (remediate.on; also resource_pressure, memmon's \
            restart over a memory limit, and given_up when listed) through the durable consumer \
            remediate.durable, checks the process is still down (or still over the limit), and \
            restarts it through \
            process-compose's API within remediate.policy / remediate.rules (attempts per \
            window, backoff, circuit breaker, allow and deny lists). Every decision is published \
            on core.remediation.{namespace}.{name}.{action}; `pc-eventd watch --remediation` \
            shows them. SIGTERM and SIGINT stop it after the event in hand."
    )]
    Remediate(RemediateArgs),
    /// Post crash-loop, given-up, pressure, silence and health alerts to a webhook, one per
    /// episode [config: alert]
    #[command(long_about = "Post alerts to a webhook, one per episode.\n\n\
            Reads the event types alert.types through the durable consumer alert.durable and \
            groups them by process and type: a crash loop is one `opened` alert (with the \
            crash's last output), one `escalated` after alert.escalate_after events, and one \
            `resolved` after alert.quiet_period without another. given_up pages at critical \
            until the process runs again; resource_pressure and silent are resolved by their \
            recovery. Each alert is a JSON POST to alert.url, retried with backoff. \
            SIGTERM and SIGINT stop it.")]
    Alert(AlertArgs),
    /// Serve a live web page of every process, from the event stream [config: dashboard]
    #[command(
        long_about = "Serve a live web page of every process, from the event stream.\n\n\
            Shows every process of every source (its status, readiness, restarts, last exit \
            code, pid, and since when; crash loops stand out), a live timeline of events with \
            remediation outcomes and loss markers, and one process's history, with filters kept \
            in the URL. Listens on dashboard.listen (127.0.0.1:9480); beyond loopback it needs \
            dashboard.token_file. Read-only. SIGTERM and SIGINT stop it."
    )]
    Dashboard(DashboardArgs),
    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script, e.g. `pc-eventd completions bash > /etc/bash_completion.d/pc-eventd`
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub compose: ComposeArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// How often to poll process-compose, e.g. 2s or 500ms [config: process_compose.poll_interval]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RemediateArgs {
    #[command(flatten)]
    pub compose: ComposeArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Decide and publish, but restart nothing [config: remediate.dry_run]
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct AlertArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The webhook to POST alerts to [config: alert.url]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Where to serve the page, e.g. 127.0.0.1:9480 [config: dashboard.listen]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Only this source's events (one host of a fleet) [config: dashboard.source]
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
}

#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// process-compose API base URL [config: process_compose.url]
    #[arg(long, value_name = "URL", conflicts_with = "compose_port")]
    pub compose_url: Option<String>,
    /// process-compose API port on 127.0.0.1 [config: process_compose.url]
    #[arg(long, value_name = "PORT")]
    pub compose_port: Option<u16>,
    /// process-compose unix socket, instead of the URL [config: process_compose.socket]
    #[arg(long, value_name = "PATH")]
    pub compose_socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server URL [config: nats.url]
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Only events from this source (a host's `process_compose.source`): selected by the server
    /// when the daemons publish with `nats.subject_layout = "by_source"`
    #[arg(long, short = 's', value_name = "SOURCE")]
    pub source: Option<String>,
    /// Only this process: NAME (any namespace) or NAMESPACE/NAME
    #[arg(long, short = 'p', value_name = "NAME|NS/NAME")]
    pub process: Option<String>,
    /// Only this namespace
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Only these event types (repeatable)
    #[arg(long = "type", short = 't', value_name = "TYPE", value_parser = parse_event_type)]
    pub types: Vec<EventType>,
    /// Hide events below this severity, unless their type is asked for with --type
    #[arg(long, value_enum, default_value = "info")]
    pub severity: SeverityArg,
    /// One JSON event per line, exactly as published
    #[arg(long)]
    pub json: bool,
    /// Under each crash, the last lines the process printed (as its event carries them)
    #[arg(long, conflicts_with = "json")]
    pub crash_output: bool,
    /// First replay the events stored in the last DURATION (e.g. 10m, 2h), then follow new ones
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, group = "history")]
    pub since: Option<Duration>,
    /// First replay every event the stream holds, then follow new ones
    #[arg(long, group = "history")]
    pub all: bool,
    /// First show the last event of every process (one line each), then follow new ones
    #[arg(long, group = "history")]
    pub last_state: bool,
    /// Show what `pc-eventd remediate` did instead (all of it, then new actions); only
    /// --process and --json apply
    #[arg(long, conflicts_with_all = ["namespace", "types", "since", "all", "last_state"])]
    pub remediation: bool,
    /// How long to keep trying NATS when it does not answer (at start, or after losing it)
    /// before exiting with an error
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    pub give_up_after: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SeverityArg {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Debug => Severity::Debug,
            SeverityArg::Info => Severity::Info,
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Error => Severity::Error,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

fn parse_event_type(s: &str) -> Result<EventType, String> {
    s.parse()
        .map_err(|e: pc_eventd_events::event::UnknownEventType| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the layered configuration and print it, secrets redacted (exit 78 if invalid)
    Check,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = cli.config;
    match cli.command {
        Command::Run(args) => {
            let overrides = Overrides {
                poll_interval: args.poll_interval,
                ..args.compose.overrides(args.nats)
            };
            run(Sources { file, overrides })
        }
        Command::Remediate(args) => remediate_command(file, args),
        Command::Alert(args) => alert_command(file, args),
        Command::Dashboard(args) => dashboard_command(file, args),
        Command::Watch(args) => {
            let overrides = Overrides {
                nats_url: args.nats.nats_url.clone(),
                ..Overrides::default()
            };
            with_config(file, overrides, |config| watch(config, &args))
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "pc-eventd", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        // The daemon's file, checked by the daemon's rules.
        Command::Config(ConfigCommand::Check) => {
            loaded_with(Config::load, file, Overrides::default(), |config| {
                print!("{}", config.to_redacted_toml());
                eprintln!("configuration OK");
                ExitCode::SUCCESS
            })
        }
    }
}

/// `pc-eventd remediate`.
fn remediate_command(file: Option<PathBuf>, args: RemediateArgs) -> ExitCode {
    let overrides = args.compose.overrides(args.nats);
    with_config(file, overrides, |mut config| {
        config.remediate.dry_run |= args.dry_run;
        let compose = match config.process_compose.client() {
            Ok(compose) => compose,
            Err(err) => return config_failure(&err.into()),
        };
        let source = config.process_compose.source();
        consumer_command(
            "remediate",
            config,
            |config, stop| remediate::run(config.remediate, config.nats, compose, source, stop),
            |_| false,
        )
    })
}

/// `pc-eventd alert`.
fn alert_command(file: Option<PathBuf>, args: AlertArgs) -> ExitCode {
    let overrides = Overrides {
        nats_url: args.nats.nats_url,
        ..Overrides::default()
    };
    with_config(file, overrides, |mut config| {
        if let Some(url) = args.url {
            config.alert.url = Some(pc_eventd_events::nats::Secret::new(url));
        }
        consumer_command(
            "alert",
            config,
            |config, stop| alert::run(config.alert, config.nats, stop),
            alert::AlertError::is_config,
        )
    })
}

/// `pc-eventd dashboard`.
fn dashboard_command(file: Option<PathBuf>, args: DashboardArgs) -> ExitCode {
    let overrides = Overrides {
        nats_url: args.nats.nats_url,
        dashboard_listen: args.listen,
        dashboard_source: args.source,
        ..Overrides::default()
    };
    with_config(file, overrides, |config| {
        consumer_command(
            "dashboard",
            config,
            |config, stop| {
                let remediation = config.remediate.nats(&config.nats);
                dashboard::run(config.dashboard, config.nats, remediation, stop)
            },
            dashboard::DashboardError::is_config,
        )
    })
}

impl ComposeArgs {
    fn overrides(self, nats: NatsArgs) -> Overrides {
        Overrides {
            compose_url: self.compose_url,
            compose_port: self.compose_port,
            compose_socket: self.compose_socket,
            nats_url: nats.nats_url,
            ..Overrides::default()
        }
    }
}

/// Runs a command that reads the bus with its configuration, or exits 78.
fn with_config(
    file: Option<PathBuf>,
    overrides: Overrides,
    command: impl FnOnce(Config) -> ExitCode,
) -> ExitCode {
    loaded_with(Config::load_for_consumer, file, overrides, command)
}

/// Runs `command` with the configuration `load` makes of the file and flags, or exits 78.
fn loaded_with(
    load: fn(&Sources) -> Result<Config, ConfigError>,
    file: Option<PathBuf>,
    overrides: Overrides,
    command: impl FnOnce(Config) -> ExitCode,
) -> ExitCode {
    match load(&Sources { file, overrides }) {
        Ok(config) => command(config),
        Err(err) => config_failure(&err),
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("pc-eventd: invalid configuration:");
    for problem in &err.problems {
        eprintln!("  {problem}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn run(sources: Sources) -> ExitCode {
    runtime().block_on(async {
        // First thing: SIGHUP's default action would kill the daemon, and an operator's
        // `kill -HUP` can come at any time, even before the configuration is read.
        let (shutdown, reloads) = match daemon_signals() {
            Ok(control) => control,
            Err(err) => {
                eprintln!("pc-eventd: cannot install signal handlers: {err}");
                return ExitCode::FAILURE;
            }
        };
        let config = match Config::load(&sources) {
            Ok(config) => config,
            Err(err) => return config_failure(&err),
        };
        let log = crate::ops::logging::init(&config.log.level, config.log.format);
        let loader: ConfigLoader = Box::new(move || Config::load(&sources));
        let daemon = Daemon::new(config, loader, Arc::new(Status::default())).with_log_handle(log);
        match daemon.run(Control { shutdown, reloads }).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(DaemonError::Config(err)) => config_failure(&err),
            Err(err) => {
                tracing::error!(error = %err, "pc-eventd failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM and SIGINT cancel the token; each SIGHUP sends a reload request.
fn daemon_signals() -> std::io::Result<(CancellationToken, mpsc::Receiver<()>)> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reloads) = mpsc::channel(4);
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            if signal == SIGHUP {
                tracing::info!("SIGHUP: reloading the configuration");
                // A full queue already holds a reload that will read the newest files.
                let _ = reload_tx.try_send(());
            } else {
                tracing::info!(signal, "shutting down");
                cancel.cancel();
            }
        }
    });
    Ok((shutdown, reloads))
}

/// `pc-eventd watch`.
fn watch(config: Config, args: &WatchArgs) -> ExitCode {
    crate::ops::logging::init("warn", LogFormat::Text);
    runtime().block_on(async {
        let stop = match cancel_on_termination() {
            Ok(stop) => stop,
            Err(err) => {
                eprintln!("pc-eventd watch: cannot install signal handlers: {err}");
                return ExitCode::FAILURE;
            }
        };
        // A closed stdout (`watch | head -1` once head has its line) ends the watch at once,
        // as it does `tail -f`, not at the next line, which may never come.
        let stopped = async {
            tokio::select! {
                () = stop.cancelled() => {}
                () = watch::stdout_closed() => {}
            }
        };
        match watch_until(&config, args, stopped).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("pc-eventd watch: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Prints the events `args` asks for on stdout until `stop` resolves.
async fn watch_until(
    config: &Config,
    args: &WatchArgs,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), watch::WatchError> {
    let mut stdout = std::io::stdout();
    let output = if args.json {
        Output::Json
    } else {
        // Icons and colours are for people at a terminal, not for pipes and files.
        let styled = crate::ops::logging::colour(&std::io::stdout());
        Output::Text {
            styled,
            crash_output: args.crash_output,
        }
    };
    if args.remediation {
        let nats = config.remediate.nats(&config.nats);
        let process = args.process.as_deref();
        let source = args.source.as_deref();
        return watch::remediation(&nats, source, process, output, &mut stdout, stop).await;
    }
    let filter = Filter {
        source: args.source.clone(),
        process: args.process.clone(),
        namespace: args.namespace.clone(),
        types: args.types.clone(),
        min_severity: Some(args.severity.into()),
    };
    let patience = args.give_up_after;
    let replay = args.replay();
    watch::watch(
        &config.nats,
        &filter,
        replay,
        output,
        patience,
        &mut stdout,
        stop,
    )
    .await
}

impl WatchArgs {
    /// What to show before the live events.
    fn replay(&self) -> Replay {
        match (self.since, self.all, self.last_state) {
            (Some(since), _, _) => Replay::Since(
                std::time::SystemTime::now()
                    .checked_sub(since)
                    .unwrap_or(std::time::UNIX_EPOCH),
            ),
            (_, true, _) => Replay::All,
            (_, _, true) => Replay::LastState,
            _ => Replay::None,
        }
    }
}

/// Runs a long-lived consumer command (`remediate`, `alert`) until SIGTERM or SIGINT; an error
/// that `is_config` recognises exits 78.
fn consumer_command<Fut, E>(
    name: &str,
    config: Config,
    command: impl FnOnce(Config, CancellationToken) -> Fut,
    is_config: impl Fn(&E) -> bool,
) -> ExitCode
where
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    runtime().block_on(async {
        let stop = match cancel_on_termination() {
            Ok(stop) => stop,
            Err(err) => {
                eprintln!("pc-eventd {name}: cannot install signal handlers: {err}");
                return ExitCode::FAILURE;
            }
        };
        let _log = crate::ops::logging::init(&config.log.level, config.log.format);
        match command(config, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) if is_config(&err) => config_failure(&ConfigError::one(err.to_string())),
            Err(err) => {
                tracing::error!(error = %err, "pc-eventd {name} failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Returns a token cancelled on SIGTERM or SIGINT.
fn cancel_on_termination() -> std::io::Result<CancellationToken> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        if let Some(signal) = signals.next().await {
            tracing::info!(signal, "shutting down");
            cancel.cancel();
        }
    });
    Ok(token)
}
