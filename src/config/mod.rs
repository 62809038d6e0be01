//! Layered configuration: built-in defaults < TOML file < `PC_EVENTD_*` environment < flags.
//!
//! Every struct denies unknown fields, so a typo in `/etc/pc-eventd.toml` or a stray
//! `PC_EVENTD_*` variable is an error naming the key and where it came from, not a setting
//! silently ignored. `config/pc-eventd.toml` documents every key; a test checks that it parses to
//! exactly these defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use pc_eventd_events::event::SubjectLayout;
use pc_eventd_events::nats::{NKEY_SEED_FORM, SettingsError, is_user_seed};
use pc_eventd_events::nats::{NatsConfig, Secret};
use serde::{Deserialize, Serialize};

use crate::commands::alert::AlertConfig;
use crate::commands::dashboard::DashboardConfig;
use crate::commands::remediate::RemediateConfig;
use crate::diff::ConditionRules;
use crate::ops::logging::LogConfig;
use crate::source::{CrashOutputConfig, ProcessComposeConfig};

/// Where the daemon looks for its file when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/pc-eventd.toml";
/// Prefix of the environment variables; nested keys are joined with `__`.
pub(crate) const ENV_PREFIX: &str = "PC_EVENTD_";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub process_compose: ProcessComposeConfig,
    pub nats: NatsConfig,
    pub health: HealthConfig,
    pub daemon: DaemonConfig,
    pub outbox: OutboxConfig,
    pub remediate: RemediateConfig,
    pub alert: AlertConfig,
    pub dashboard: DashboardConfig,
    pub log: LogConfig,
    pub crash_output: CrashOutputConfig,
    pub conditions: ConditionRules,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Serve `/healthz`, `/readyz` and `/metrics`.
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    /// Export per-process gauges on `/metrics` (labelled source, namespace and name).
    pub process_metrics: bool,
    /// At most this many processes get per-process series (the first by namespace and name);
    /// `pc_eventd_process_series_omitted` counts the rest.
    pub process_metrics_limit: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9470)),
            process_metrics: false,
            process_metrics_limit: 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// After SIGTERM, how long unacknowledged events may still be retried before exiting.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Where the outbox lives; see [`DaemonConfig::state_dir`].
    pub state_dir: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(10),
            state_dir: None,
        }
    }
}

impl DaemonConfig {
    /// The state directory: `state_dir`, else systemd's `$STATE_DIRECTORY` (`StateDirectory=`),
    /// else `$XDG_STATE_HOME/pc-eventd`, else `~/.local/state/pc-eventd`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        let env = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
        self.state_dir
            .clone()
            .or_else(|| {
                // systemd lists one directory per `StateDirectory=` entry, colon-separated.
                env("STATE_DIRECTORY").and_then(|dirs| std::env::split_paths(&dirs).next())
            })
            .or_else(|| env("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("pc-eventd")))
            .or_else(|| env("HOME").map(|d| PathBuf::from(d).join(".local/state/pc-eventd")))
    }
}

/// The on-disk queue of events on their way to NATS (see `crate::delivery::outbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Most bytes of unacknowledged events kept; past it, events are dropped and reported.
    #[serde(with = "crate::units::byte_size")]
    pub max_bytes: u64,
    /// How often written events are flushed to the disk (`0s`: every event).
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

/// Which command a configuration is loaded for: the daemon has rules of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Daemon,
    Consumer,
}

/// Settings given on the command line: the top layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub compose_url: Option<String>,
    pub compose_port: Option<u16>,
    pub compose_socket: Option<PathBuf>,
    pub nats_url: Option<String>,
    pub poll_interval: Option<Duration>,
    pub dashboard_listen: Option<std::net::SocketAddr>,
    pub dashboard_source: Option<String>,
}

/// One setting from a flag: `section.field`, the flag that set it, and its value.
type FlagSetting = (
    &'static str,
    &'static str,
    &'static str,
    figment::value::Value,
);

impl Overrides {
    fn entries(&self) -> Vec<FlagSetting> {
        let mut entries = Vec::new();
        let url = self.compose_url.clone().or_else(|| {
            self.compose_port
                .map(|port| format!("http://127.0.0.1:{port}"))
        });
        if let Some(url) = url {
            let flag = if self.compose_url.is_some() {
                "--compose-url"
            } else {
                "--compose-port"
            };
            entries.push(("process_compose", "url", flag, url.into()));
        }
        if let Some(socket) = &self.compose_socket {
            let socket = socket.display().to_string();
            entries.push((
                "process_compose",
                "socket",
                "--compose-socket",
                socket.into(),
            ));
        }
        if let Some(url) = &self.nats_url {
            entries.push(("nats", "url", "--nats-url", url.clone().into()));
        }
        if let Some(listen) = self.dashboard_listen {
            entries.push(("dashboard", "listen", "--listen", listen.to_string().into()));
        }
        if let Some(source) = &self.dashboard_source {
            entries.push(("dashboard", "source", "--source", source.clone().into()));
        }
        if let Some(interval) = self.poll_interval {
            let interval = humantime::format_duration(interval).to_string();
            entries.push((
                "process_compose",
                "poll_interval",
                "--poll-interval",
                interval.into(),
            ));
        }
        entries
    }

    /// The flag that set `path` (`["nats", "url"]`), if one did.
    fn flag_for(&self, path: &[&str]) -> Option<&'static str> {
        self.entries()
            .into_iter()
            .find(|(section, field, _, _)| path == [*section, *field])
            .map(|(_, _, flag, _)| flag)
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        let flags = self.clone();
        Metadata::named("command-line flag").interpolater(move |_, path| {
            flags
                .flag_for(path)
                .map_or_else(|| path.join("."), str::to_owned)
        })
    }

    /// Built by hand rather than through an inner `Figment`: values from one keep that
    /// figment's tags, and their origin would read as a built-in default instead of the flag.
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut sections: Map<&str, Dict> = Map::new();
        for (section, field, _, value) in self.entries() {
            sections
                .entry(section)
                .or_default()
                .insert(field.to_owned(), value);
        }
        let root = sections
            .into_iter()
            .map(|(section, fields)| (section.to_owned(), fields.into()))
            .collect();
        Ok(Profile::Default.collect(root))
    }
}

/// Where a configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// An explicit file (`--config`); it must exist. Without one the default path is read if it
    /// exists.
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

/// A configuration that could not be loaded; each message names the key and its source.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl From<SettingsError> for ConfigError {
    fn from(err: SettingsError) -> Self {
        Self::one(err.to_string())
    }
}

impl ConfigError {
    pub(crate) fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl Config {
    /// Loads and validates the layered configuration, for the daemon (`run`, `config check`).
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        Self::load_as(sources, Role::Daemon)
    }

    /// Loads and validates the layered configuration for a command that reads the bus
    /// (`watch`, `alert`, `dashboard`, `remediate`): the rules of what only the daemon does,
    /// such as naming its source in subjects, are left out.
    pub fn load_for_consumer(sources: &Sources) -> Result<Self, ConfigError> {
        Self::load_as(sources, Role::Consumer)
    }

    fn load_as(sources: &Sources, role: Role) -> Result<Self, ConfigError> {
        let figment = figment(sources)?;
        let config: Config = figment.extract().map_err(|err| ConfigError {
            problems: err
                .into_iter()
                .map(|e| describe_figment_error(&e))
                .collect(),
        })?;
        config.validate(&figment, role)?;
        Ok(config)
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration always serializes")
    }

    /// The process-compose API token, from `token` or `token_file`.
    pub fn api_token(&self) -> Result<Option<Secret>, ConfigError> {
        Ok(self.process_compose.api_token()?)
    }

    fn validate(&self, figment: &Figment, role: Role) -> Result<(), ConfigError> {
        let mut p = Problems {
            figment,
            found: Vec::new(),
        };
        p.take("process_compose", self.process_compose.problems());
        p.take("crash_output", self.crash_output.problems());
        p.take("conditions", self.conditions.problems());
        check_nats_connection(&self.nats, &mut p);
        check_nats_stream(&self.nats, &mut p);
        // Named by the layout's key: that is the setting the user wrote, in a file or variable.
        // Only the daemon puts its source in subjects; a reader selects sources by flag.
        p.check(
            "nats.subject_layout",
            role == Role::Consumer
                || self.nats.subject_layout != SubjectLayout::BySource
                || self.process_compose.source.is_some(),
            "by_source needs process_compose.source: this host's token in every subject (e.g. \"web-01\")",
        );
        self.check_consumers(&mut p);
        self.check_daemon(&mut p);
        if p.found.is_empty() {
            self.api_token()?;
            // Reads the nkey seed and creds files, as connecting will.
            self.nats
                .connect_options(async_nats::ConnectOptions::new())
                .map(|_| ())
                .map_err(ConfigError::from)
        } else {
            Err(ConfigError { problems: p.found })
        }
    }

    /// The consumers' sections: each checks itself; that remediation events stay out of the
    /// lifecycle stream's subjects is a rule between two sections.
    fn check_consumers(&self, p: &mut Problems<'_>) {
        let (nats, remediate) = (&self.nats, &self.remediate);
        p.check(
            "remediate.subject_prefix",
            is_literal_subject(&remediate.subject_prefix)
                && remediate.subject_prefix != nats.subject_prefix
                && !remediate
                    .subject_prefix
                    .starts_with(&format!("{}.", nats.subject_prefix)),
            "must be a literal subject outside nats.subject_prefix",
        );
        p.take("remediate", remediate.problems());
        p.take("alert", self.alert.problems());
        p.take("dashboard", self.dashboard.problems());
    }

    /// What the daemon itself needs: the outbox, the state directory, the log filter.
    fn check_daemon(&self, p: &mut Problems<'_>) {
        p.check(
            "outbox.max_bytes",
            self.outbox.max_bytes >= 1024 * 1024,
            "must be at least 1MiB",
        );
        p.check(
            "daemon.state_dir",
            self.daemon.state_dir().is_some(),
            "not set, and none of STATE_DIRECTORY, XDG_STATE_HOME or HOME is",
        );
        p.check(
            "log.level",
            tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok(),
            "not a valid tracing filter (e.g. `info` or `info,async_nats=warn`)",
        );
    }
}

/// The problems found in a configuration, each naming its key and where its value came from.
struct Problems<'a> {
    figment: &'a Figment,
    found: Vec<String>,
}

impl Problems<'_> {
    fn check(&mut self, key: &str, ok: bool, message: &str) {
        if !ok {
            let origin = self.origin(key);
            self.found.push(format!("{key} (from {origin}): {message}"));
        }
    }

    /// Takes the problems a section found in itself, as (key within `section`, message).
    fn take(&mut self, section: &str, problems: Vec<(String, &'static str)>) {
        for (key, message) in problems {
            self.check(&format!("{section}.{key}"), false, message);
        }
    }

    fn origin(&self, key: &str) -> String {
        origin(self.figment, key)
    }
}

/// The NATS servers, authentication and TLS.
fn check_nats_connection(nats: &NatsConfig, p: &mut Problems<'_>) {
    check_nats_servers(nats, p);
    check_nats_auth(nats, p);
    check_nats_tls(nats, p);
    check_nats_files(nats, p);
}

/// `nats.url`: at least one server, none with credentials in it.
fn check_nats_servers(nats: &NatsConfig, p: &mut Problems<'_>) {
    p.check(
        "nats.url",
        !nats.servers().is_empty(),
        "must name at least one server",
    );
    for server in nats.servers() {
        match server.parse::<async_nats::ServerAddr>() {
            // The parse errors name the part that is wrong, never the whole URL.
            Err(err) => p.check("nats.url", false, &err.to_string()),
            Ok(addr) => p.check(
                "nats.url",
                !addr.has_user_pass(),
                "must not hold credentials (they would be logged): use nats.user and \
                     nats.password, or nats.token",
            ),
        }
    }
}

/// Authentication: each method whole, and only one of them.
fn check_nats_auth(nats: &NatsConfig, p: &mut Problems<'_>) {
    p.check(
        "nats.password",
        nats.password.is_none() || nats.user.is_some(),
        "needs nats.user",
    );
    p.check(
        "nats.user",
        nats.user.is_none() || nats.password.is_some(),
        "needs nats.password",
    );
    p.check(
        "nats.nkey_seed_file",
        nats.nkey_seed.is_none() || nats.nkey_seed_file.is_none(),
        "set either nkey_seed or nkey_seed_file, not both",
    );
    p.check(
        "nats.nkey_seed",
        nats.nkey_seed
            .as_ref()
            .is_none_or(|seed| is_user_seed(seed.expose())),
        &format!("not a user nkey seed ({NKEY_SEED_FORM}; value not shown)"),
    );
    let methods: Vec<&str> = [
        ("nats.user", nats.user.is_some() || nats.password.is_some()),
        ("nats.token", nats.token.is_some()),
        // nkey_seed with nkey_seed_file has its own message
        ("nats.nkey_seed", nats.nkey_seed.is_some()),
        (
            "nats.nkey_seed_file",
            nats.nkey_seed.is_none() && nats.nkey_seed_file.is_some(),
        ),
        ("nats.creds_file", nats.creds_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if let [first, others @ ..] = methods.as_slice() {
        for other in others {
            let message = format!(
                "conflicts with {first} (from {}): set one of user/password, token, \
                     nkey_seed, nkey_seed_file or creds_file",
                p.origin(first)
            );
            p.check(other, false, &message);
        }
    }
}

/// TLS: a client certificate comes with its key.
fn check_nats_tls(nats: &NatsConfig, p: &mut Problems<'_>) {
    p.check(
        "nats.tls_cert_file",
        nats.tls_cert_file.is_none() || nats.tls_key_file.is_some(),
        "needs nats.tls_key_file",
    );
    p.check(
        "nats.tls_key_file",
        nats.tls_key_file.is_none() || nats.tls_cert_file.is_some(),
        "needs nats.tls_cert_file",
    );
}

/// Every file named (seed, credentials, TLS) can be read now.
fn check_nats_files(nats: &NatsConfig, p: &mut Problems<'_>) {
    for (key, path) in [
        ("nats.nkey_seed_file", &nats.nkey_seed_file),
        ("nats.creds_file", &nats.creds_file),
        ("nats.tls_ca_file", &nats.tls_ca_file),
        ("nats.tls_cert_file", &nats.tls_cert_file),
        ("nats.tls_key_file", &nats.tls_key_file),
    ] {
        if let Some(path) = path
            && let Err(problem) = readable_file(path)
        {
            p.check(key, false, &problem);
        }
    }
}

/// The NATS subjects and stream.
fn check_nats_stream(nats: &NatsConfig, p: &mut Problems<'_>) {
    p.check(
        "nats.subject_prefix",
        is_literal_subject(&nats.subject_prefix),
        "must be a literal subject: dot-separated, non-empty tokens without spaces, `*` or `>`",
    );
    p.check(
        "nats.ack_timeout",
        !nats.ack_timeout.is_zero(),
        "must be greater than zero",
    );
    let stream = &nats.stream;
    p.check(
        "nats.stream.name",
        !stream.name.is_empty()
            && !stream
                .name
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\')),
        "must be non-empty, without spaces, `.`, `*`, `>`, `/` or `\\`",
    );
    p.check(
        "nats.stream.replicas",
        (1..=5).contains(&stream.replicas),
        "must be between 1 and 5",
    );
    p.check(
        "nats.stream.duplicate_window",
        !stream.duplicate_window.is_zero() && stream.duplicate_window <= stream.max_age,
        "must be greater than zero and no longer than max_age",
    );
}

/// Ok if `path` is a regular file this process can open.
fn readable_file(path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err(format!("{}: not found or not a file", path.display()));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn figment(sources: &Sources) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    match &sources.file {
        Some(path) => {
            if !path.is_file() {
                return Err(ConfigError::one(format!(
                    "config file {}: not found or not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
            figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_PATH));
        }
        None => {}
    }
    Ok(figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .merge(sources.overrides.clone()))
}

/// Names where the value of `key` came from: a file, an environment variable, a flag, or the
/// built-in default.
fn origin(figment: &Figment, key: &str) -> String {
    // An entry of an array of tables (`conditions.pressure[0].cpu`) comes from where the array
    // does.
    let key = key.split('[').next().unwrap_or(key);
    match figment.find_metadata(key) {
        Some(metadata) => describe_metadata(metadata, &key.split('.').collect::<Vec<_>>()),
        None => "built-in default".into(),
    }
}

fn describe_metadata(metadata: &Metadata, path: &[&str]) -> String {
    if let Some(figment::Source::File(file)) = &metadata.source {
        return file.display().to_string();
    }
    if metadata.name.contains("environment") {
        return format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase());
    }
    if metadata.name.contains("command-line") {
        return metadata.interpolate(&Profile::Default, path);
    }
    if metadata.name.contains("Serialized") {
        return "built-in default".into();
    }
    metadata.name.to_string()
}

fn describe_figment_error(error: &figment::Error) -> String {
    use figment::error::Kind;
    let path: Vec<&str> = error.path.iter().map(String::as_str).collect();
    let key = if path.is_empty() {
        "configuration".to_owned()
    } else {
        path.join(".")
    };
    let source = error
        .metadata
        .as_ref()
        .map(|m| describe_metadata(m, &path))
        .unwrap_or_else(|| "unknown source".into());
    let message = match &error.kind {
        // figment's path already ends with the unknown key
        Kind::UnknownField(..) => "unknown key".to_owned(),
        Kind::Message(m) if path.is_empty() => return format!("{source}: {m}"),
        other => other.to_string(),
    };
    format!("{key} (from {source}): {message}")
}

fn is_literal_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && !token.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        })
}

#[cfg(test)]
// figment's Jail fixes the closures' error type to its own (large) error.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    use figment::Jail;

    fn load_file(jail: &Jail, name: &str) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            file: Some(jail.directory().join(name)),
            ..Sources::default()
        })
    }

    fn error_text(result: Result<Config, ConfigError>) -> String {
        result.expect_err("the config must be rejected").to_string()
    }
    use crate::source::SourceMode;

    #[test]
    fn small_names_and_forms() {
        let mut pc = ProcessComposeConfig::default();
        assert_eq!(pc.source(), "http://127.0.0.1:8080");
        pc.socket = Some("/run/pc.sock".into());
        assert_eq!(pc.source(), "unix:/run/pc.sock");
        pc.source = Some("web-01/shop".into());
        assert_eq!(pc.source(), "web-01/shop");
        let modes = [SourceMode::Auto, SourceMode::Stream, SourceMode::Poll];
        assert_eq!(modes.map(SourceMode::as_str), ["auto", "stream", "poll"]);
        let nats = NatsConfig {
            subject_prefix: "acme.pc".into(),
            ..NatsConfig::default()
        };
        assert_eq!(nats.subjects().wildcard(), "acme.pc.>");
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn layers_apply_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "pc.toml",
                r#"
                [process_compose]
                poll_interval = "500ms"
                [nats]
                url = "nats://file:4222"
                subject_prefix = "acme.proc"
                "#,
            )?;
            jail.set_env("PC_EVENTD_NATS__URL", "nats://env:4222");
            jail.set_env("PC_EVENTD_NATS__STREAM__REPLICAS", "3");
            let config = Config::load(&Sources {
                file: Some(jail.directory().join("pc.toml")),
                overrides: Overrides {
                    compose_port: Some(28081),
                    ..Overrides::default()
                },
            })
            .unwrap();
            assert_eq!(
                config.process_compose.poll_interval,
                Duration::from_millis(500)
            );
            assert_eq!(config.nats.url, "nats://env:4222");
            assert_eq!(config.nats.stream.replicas, 3);
            assert_eq!(config.nats.subject_prefix, "acme.proc");
            assert_eq!(config.process_compose.url, "http://127.0.0.1:28081");

            let flagged = Config::load(&Sources {
                file: Some(jail.directory().join("pc.toml")),
                overrides: Overrides {
                    nats_url: Some("nats://flag:4222".into()),
                    poll_interval: Some(Duration::from_secs(7)),
                    ..Overrides::default()
                },
            })
            .unwrap();
            assert_eq!(flagged.nats.url, "nats://flag:4222");
            assert_eq!(
                flagged.process_compose.poll_interval,
                Duration::from_secs(7)
            );
            Ok(())
        });
    }

    #[test]
    fn problems_from_flags_name_the_flag() {
        Jail::expect_with(|_| {
            let text = error_text(Config::load(&Sources {
                overrides: Overrides {
                    compose_url: Some("ftp://127.0.0.1:8080".into()),
                    poll_interval: Some(Duration::ZERO),
                    ..Overrides::default()
                },
                ..Sources::default()
            }));
            assert!(
                text.contains("process_compose.url (from --compose-url)"),
                "{text}"
            );
            assert!(
                text.contains("process_compose.poll_interval (from --poll-interval)"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_is_the_defaults() {
        // In a Jail like every test that reads the environment: Jails run one at a time.
        Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pc-eventd.toml");
            let config = Config::load(&Sources {
                file: Some(path),
                ..Sources::default()
            })
            .unwrap();
            assert_eq!(config, Config::default());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[nats]\nurll = \"x\"\n")?;
            let text = error_text(load_file(jail, "bad.toml"));
            assert!(text.contains("nats.urll (from "), "{text}");
            assert!(!text.contains("urll.urll"), "{text}");
            assert!(text.contains("bad.toml): unknown key"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn bad_types_name_the_key_and_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[nats.stream]\nmax_age = \"24 hours please\"\n")?;
            let text = error_text(load_file(jail, "bad.toml"));
            assert!(text.contains("nats.stream.max_age"), "{text}");
            assert!(text.contains("bad.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("PC_EVENTD_PROCESS_COMPOSE__POLL_INTERVAL", "soon");
            let text = error_text(Config::load(&Sources::default()));
            assert!(
                text.contains("PC_EVENTD_PROCESS_COMPOSE__POLL_INTERVAL"),
                "{text}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PC_EVENTD_NATS_URL", "nats://x:4222");
            let text = error_text(Config::load(&Sources::default()));
            assert!(text.contains("PC_EVENTD_NATS_URL"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn semantic_checks_name_the_key_and_its_origin() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[nats]\nsubject_prefix = \"core.*\"\n")?;
            jail.set_env("PC_EVENTD_NATS__STREAM__REPLICAS", "9");
            let text = error_text(load_file(jail, "bad.toml"));
            assert!(text.contains("nats.subject_prefix (from "), "{text}");
            assert!(text.contains("bad.toml"), "{text}");
            assert!(
                text.contains("nats.stream.replicas (from PC_EVENTD_NATS__STREAM__REPLICAS)"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn outbox_sizes_read_as_bytes_or_with_a_unit() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "sizes.toml",
                "[outbox]\nmax_bytes = \"64MiB\"\nfsync_interval = \"0s\"\n",
            )?;
            let config = load_file(jail, "sizes.toml").unwrap();
            assert_eq!(config.outbox.max_bytes, 64 * 1024 * 1024);
            assert!(config.outbox.fsync_interval.is_zero());
            jail.set_env("PC_EVENTD_OUTBOX__MAX_BYTES", "2000000");
            assert_eq!(
                load_file(jail, "sizes.toml").unwrap().outbox.max_bytes,
                2_000_000
            );
            jail.set_env("PC_EVENTD_OUTBOX__MAX_BYTES", "lots");
            let text = error_text(load_file(jail, "sizes.toml"));
            assert!(text.contains("PC_EVENTD_OUTBOX__MAX_BYTES"), "{text}");
            assert!(text.contains("not a size"), "{text}");
            jail.set_env("PC_EVENTD_OUTBOX__MAX_BYTES", "10KB");
            let text = error_text(load_file(jail, "sizes.toml"));
            assert!(
                text.contains(
                    "outbox.max_bytes (from PC_EVENTD_OUTBOX__MAX_BYTES): must be at least 1MiB"
                ),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_state_directory_follows_systemd_then_xdg_then_home() {
        Jail::expect_with(|jail| {
            jail.set_env("HOME", "/home/ops");
            jail.set_env("XDG_STATE_HOME", "");
            jail.set_env("STATE_DIRECTORY", "");
            let daemon = DaemonConfig::default();
            assert_eq!(
                daemon.state_dir(),
                Some("/home/ops/.local/state/pc-eventd".into())
            );
            jail.set_env("XDG_STATE_HOME", "/home/ops/state");
            assert_eq!(daemon.state_dir(), Some("/home/ops/state/pc-eventd".into()));
            jail.set_env("STATE_DIRECTORY", "/var/lib/pc-eventd:/var/lib/other");
            assert_eq!(daemon.state_dir(), Some("/var/lib/pc-eventd".into()));
            let set = DaemonConfig {
                state_dir: Some("/srv/pc-eventd".into()),
                ..DaemonConfig::default()
            };
            assert_eq!(set.state_dir(), Some("/srv/pc-eventd".into()));
            Ok(())
        });
    }

    #[test]
    fn syntax_errors_name_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("broken.toml", "[nats\nurl = 1")?;
            let text = error_text(load_file(jail, "broken.toml"));
            assert!(
                text.contains("broken.toml: TOML parse error at line 1"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        Jail::expect_with(|_| {
            let text = error_text(Config::load(&Sources {
                file: Some("/nonexistent/pc-eventd.toml".into()),
                ..Sources::default()
            }));
            assert!(text.contains("/nonexistent/pc-eventd.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "PC_EVENTD_PROCESS_COMPOSE__TOKEN",
                "12345678901234567890123",
            );
            let config = Config::load(&Sources::default()).unwrap();
            assert_eq!(
                config.api_token().unwrap().unwrap().expose(),
                "12345678901234567890123"
            );
            let shown = format!("{}\n{config:?}", config.to_redacted_toml());
            assert!(!shown.contains("1234567890"), "{shown}");
            assert!(shown.contains("<redacted>"));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                "[process_compose]\ntoken = [\"hunter2-secret\"]\n",
            )?;
            let text = error_text(load_file(jail, "bad.toml"));
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("process_compose.token"), "{text}");
            Ok(())
        });
    }

    /// A TOML string literal of `jail`'s file `name`.
    fn jail_path(jail: &Jail, name: &str) -> String {
        format!("{:?}", jail.directory().join(name).display().to_string())
    }

    #[test]
    fn nats_auth_and_tls_keys_load_and_build_connect_options() {
        Jail::expect_with(|jail| {
            jail.create_file("ca.pem", "ca")?;
            jail.create_file("client.pem", "cert")?;
            jail.create_file("client.key", "key")?;
            jail.create_file(
                "pc.toml",
                &format!(
                    "[nats]\nurl = \"tls://a:4222, tls://b:4222,,\"\nuser = \"pc\"\n\
                     tls_ca_file = {}\ntls_cert_file = {}\ntls_key_file = {}\n",
                    jail_path(jail, "ca.pem"),
                    jail_path(jail, "client.pem"),
                    jail_path(jail, "client.key"),
                ),
            )?;
            jail.set_env("PC_EVENTD_NATS__PASSWORD", "1234567890");
            let config = load_file(jail, "pc.toml").unwrap();
            let nats = &config.nats;
            assert_eq!(nats.servers(), ["tls://a:4222", "tls://b:4222"]);
            assert_eq!(nats.user.as_deref(), Some("pc"));
            assert_eq!(nats.password.as_ref().unwrap().expose(), "1234567890");
            assert!(
                !nats.tls_required,
                "a tls:// URL implies it when connecting"
            );
            assert!(requires_tls(nats), "a tls:// URL requires TLS");
            Ok(())
        });
    }

    /// Whether the options built from `nats` require TLS (`ConnectOptions` shows it only in
    /// its Debug form).
    fn requires_tls(nats: &NatsConfig) -> bool {
        let options = nats
            .connect_options(async_nats::ConnectOptions::new())
            .unwrap();
        format!("{options:?}").contains("\"tls_required\": true")
    }

    #[test]
    fn tls_is_required_by_the_key_or_by_a_tls_url() {
        let plain = NatsConfig::default();
        assert!(!requires_tls(&plain));
        let required = NatsConfig {
            tls_required: true,
            ..NatsConfig::default()
        };
        assert!(requires_tls(&required));
        let one_tls_url = NatsConfig {
            url: "nats://a:4222,tls://b:4222".into(),
            ..NatsConfig::default()
        };
        assert!(requires_tls(&one_tls_url));
    }

    /// The problems `toml` gives, in one string (empty when it loads).
    fn problems(toml: &str) -> String {
        let mut text = String::new();
        Jail::expect_with(|jail| {
            jail.create_file("pc.toml", toml)?;
            if let Err(err) = load_file(jail, "pc.toml") {
                text = err.to_string();
            }
            Ok(())
        });
        text
    }

    #[test]
    fn a_reader_of_a_by_source_stream_needs_no_source_of_its_own() {
        Jail::expect_with(|jail| {
            jail.create_file("pc.toml", "[nats]\nsubject_layout = \"by_source\"\n")?;
            let sources = Sources {
                file: Some(jail.directory().join("pc.toml")),
                ..Sources::default()
            };
            let config = Config::load_for_consumer(&sources).expect("a reader's configuration");
            assert_eq!(config.nats.subject_layout, SubjectLayout::BySource);
            assert!(Config::load(&sources).is_err(), "the daemon's is refused");
            Ok(())
        });
    }

    #[test]
    fn each_rule_rejects_its_own_fault_alone() {
        for (toml, key) in [
            (
                "[process_compose]\nurl = \"https://127.0.0.1:8080\"",
                "process_compose.url",
            ),
            ("[nats.stream]\nname = \"\"", "nats.stream.name"),
            ("[nats.stream]\nname = \"EVENTS.A\"", "nats.stream.name"),
            (
                "[nats.stream]\nduplicate_window = \"2h\"\nmax_age = \"1h\"",
                "nats.stream.duplicate_window",
            ),
            (
                "[remediate]\nsubject_prefix = \"core.process\"",
                "remediate.subject_prefix",
            ),
            (
                "[remediate]\nsubject_prefix = \"core.process.fix\"",
                "remediate.subject_prefix",
            ),
            (
                "[nats]\nsubject_layout = \"by_source\"",
                "nats.subject_layout",
            ),
            ("[alert]\nurl = \"ftp://127.0.0.1/hook\"", "alert.url"),
            ("[alert]\ntimeout = \"0s\"", "alert.quiet_period"),
            ("[alert]\ndurable = \"\"", "alert.durable"),
            ("[remediate]\ndurable = \"fix.er\"", "remediate.durable"),
            ("[remediate.policy]\nmax_attempts = 0", "remediate.policy"),
            ("[remediate.policy]\nwindow = \"0s\"", "remediate.policy"),
            (
                "[nats]\nnkey_seed = \"SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W\"",
                "nats.nkey_seed",
            ),
            (
                "[nats]\nnkey_seed = \"UAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLMX\"",
                "nats.nkey_seed",
            ),
            (
                "[nats]\nuser = \"pc\"\ntoken = \"tok\"",
                "pc.toml): conflicts with nats.user",
            ),
            ("[crash_output]\nlines = 0", "crash_output.lines (from "),
            (
                "[crash_output]\nmax_bytes = 0",
                "crash_output.max_bytes (from ",
            ),
            (
                "[crash_output]\nread_timeout = \"0s\"",
                "crash_output.read_timeout (from ",
            ),
            (
                "[conditions]\nsample_interval = \"0s\"",
                "conditions.sample_interval (from ",
            ),
            (
                "[[conditions.pressure]]\nfor = \"30s\"",
                "conditions.pressure[0] (from /",
            ),
            (
                "[[conditions.pressure]]\ncpu = 0.0\nfor = \"30s\"",
                "conditions.pressure[0].cpu (from ",
            ),
            (
                "[[conditions.pressure]]\nmemory = \"0MiB\"\nfor = \"30s\"",
                "conditions.pressure[0].memory (from ",
            ),
            (
                "[[conditions.silence]]\nafter = \"0s\"",
                "conditions.silence[0].after (from ",
            ),
        ] {
            let text = problems(toml);
            assert!(text.contains(key), "{toml}\n gave: {text}");
        }
    }

    #[test]
    fn accepted_settings_pass_every_rule() {
        for toml in [
            "[process_compose]\nreadiness_grace = \"5s\"",
            "[nats]\nuser = \"pc\"\npassword = \"pw\"",
            "[remediate.policy]\nmax_attempts = 1\nwindow = \"1s\"",
            "[alert]\nurl = \"https://127.0.0.1/hook\"\nquiet_period = \"1s\"\ntimeout = \"1s\"",
            "[crash_output]\nenabled = false\nlines = 0\nskip = [\"batch-*\"]\nredact = []",
            "[[conditions.pressure]]\nprocesses = [\"web\"]\nmemory = \"512MiB\"\nfor = \"30s\"\n\
             [[conditions.pressure]]\ncpu = 90.5\nfor = \"0s\"\n[[conditions.silence]]\nafter = \"5m\"",
        ] {
            assert_eq!(problems(toml), "", "{toml}");
        }
    }

    #[test]
    fn nats_auth_problems_name_the_key_and_its_origin() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                "[nats]\npassword = \"p4ss-w0rd-value\"\ntls_cert_file = \"/nonexistent/client.pem\"\n",
            )?;
            let text = error_text(load_file(jail, "bad.toml"));
            assert!(text.contains("nats.password (from "), "{text}");
            assert!(text.contains("bad.toml): needs nats.user"), "{text}");
            assert!(text.contains("nats.tls_cert_file (from "), "{text}");
            assert!(
                text.contains("bad.toml): needs nats.tls_key_file"),
                "{text}"
            );
            assert!(
                text.contains("/nonexistent/client.pem: not found or not a file"),
                "{text}"
            );
            assert!(!text.contains("p4ss-w0rd"), "{text}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PC_EVENTD_NATS__USER", "pc");
            jail.set_env("PC_EVENTD_NATS__TLS_KEY_FILE", "/nonexistent/client.key");
            let text = error_text(Config::load(&Sources::default()));
            assert!(
                text.contains("nats.user (from PC_EVENTD_NATS__USER): needs nats.password"),
                "{text}"
            );
            assert!(
                text.contains("nats.tls_key_file (from PC_EVENTD_NATS__TLS_KEY_FILE): needs nats.tls_cert_file"),
                "{text}"
            );
            assert!(
                text.contains(
                    "nats.tls_key_file (from PC_EVENTD_NATS__TLS_KEY_FILE): \
                     /nonexistent/client.key: not found"
                ),
                "{text}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file(
                "two.toml",
                "[nats]\nuser = \"pc\"\npassword = \"pw-value-1\"\ntoken = \"tok-value-2\"\n",
            )?;
            jail.set_env("PC_EVENTD_NATS__CREDS_FILE", "/nonexistent/pc.creds");
            let text = error_text(load_file(jail, "two.toml"));
            assert!(
                text.contains("nats.token (from ") && text.contains("conflicts with nats.user"),
                "{text}"
            );
            assert!(
                text.contains("nats.creds_file (from PC_EVENTD_NATS__CREDS_FILE): conflicts"),
                "{text}"
            );
            assert!(
                text.contains("/nonexistent/pc.creds: not found or not a file"),
                "{text}"
            );
            assert!(!text.contains("pw-value") && !text.contains("tok-value"));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PC_EVENTD_NATS__URL", "nats://127.0.0.1:1,");
            jail.set_env(
                "PC_EVENTD_NATS__NKEY_SEED",
                "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM",
            );
            jail.set_env("PC_EVENTD_NATS__NKEY_SEED_FILE", "/nonexistent/pc.nk");
            let text = error_text(Config::load(&Sources::default()));
            assert!(
                text.contains(
                    "nats.nkey_seed_file (from PC_EVENTD_NATS__NKEY_SEED_FILE): set either"
                ),
                "{text}"
            );
            assert!(!text.contains("SUAIO3"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn nats_urls_are_checked_without_being_shown() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "PC_EVENTD_NATS__URL",
                "nats://pc:url-password-77@127.0.0.1:4222",
            );
            let text = error_text(Config::load(&Sources::default()));
            assert!(
                text.contains("nats.url (from PC_EVENTD_NATS__URL): must not hold credentials"),
                "{text}"
            );
            assert!(!text.contains("url-password"), "{text}");
            jail.set_env("PC_EVENTD_NATS__URL", "nats://a:4222,http://b:80");
            let text = error_text(Config::load(&Sources::default()));
            assert!(
                text.contains("invalid scheme for NATS server URL: http"),
                "{text}"
            );
            jail.set_env("PC_EVENTD_NATS__URL", " , ");
            let text = error_text(Config::load(&Sources::default()));
            assert!(text.contains("must name at least one server"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn nkey_seeds_and_creds_files_are_read_and_checked() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        Jail::expect_with(|jail| {
            jail.create_file("pc.nk", &format!("{seed}\n"))?;
            jail.set_env(
                "PC_EVENTD_NATS__NKEY_SEED_FILE",
                jail_path(jail, "pc.nk").trim_matches('"'),
            );
            let config = Config::load(&Sources::default()).unwrap();
            assert_eq!(config.nats.nkey_seed().unwrap().unwrap().expose(), seed);

            // A public key where the seed belongs: refused, neither value shown.
            let public = nkeys::KeyPair::new_user().public_key();
            jail.create_file("pc.nk", &public)?;
            let text = error_text(Config::load(&Sources::default()));
            assert!(text.contains("nats.nkey_seed_file: "), "{text}");
            assert!(
                text.contains("pc.nk does not hold a user nkey seed"),
                "{text}"
            );
            assert!(!text.contains(&public[..10]), "{text}");

            jail.clear_env();
            jail.set_env("PC_EVENTD_NATS__NKEY_SEED", &public);
            let text = error_text(Config::load(&Sources::default()));
            assert!(
                text.contains(
                    "nats.nkey_seed (from PC_EVENTD_NATS__NKEY_SEED): not a user nkey seed"
                ),
                "{text}"
            );
            assert!(!text.contains(&public[..10]), "{text}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            let creds = format!(
                "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            );
            jail.create_file("pc.creds", &creds)?;
            let path = jail.directory().join("pc.creds");
            jail.set_env("PC_EVENTD_NATS__CREDS_FILE", path.display());
            let config = Config::load(&Sources::default()).unwrap();
            assert_eq!(config.nats.creds_file, Some(path));

            jail.create_file("pc.creds", &format!("just the seed {seed}"))?;
            let text = error_text(Config::load(&Sources::default()));
            assert!(text.contains("nats.creds_file: "), "{text}");
            assert!(text.contains("pc.creds: cannot parse"), "{text}");
            assert!(!text.contains(&seed[..10]), "{text}");
            Ok(())
        });
    }

    #[test]
    fn nats_secrets_never_print() {
        Jail::expect_with(|jail| {
            jail.set_env("PC_EVENTD_NATS__USER", "pc");
            jail.set_env("PC_EVENTD_NATS__PASSWORD", "nats-password-0123456789");
            let config = Config::load(&Sources::default()).unwrap();
            let shown = format!("{}\n{config:?}", config.to_redacted_toml());
            assert!(!shown.contains("0123456789"), "{shown}");
            assert!(shown.contains("password = \"<redacted>\""), "{shown}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PC_EVENTD_NATS__TOKEN", "nats-token-0123456789");
            let config = Config::load(&Sources::default()).unwrap();
            let shown = format!("{}\n{config:?}", config.to_redacted_toml());
            assert!(!shown.contains("0123456789"), "{shown}");
            assert!(shown.contains("token = \"<redacted>\""), "{shown}");
            Ok(())
        });
        for (key, value) in [
            ("password", "[\"hunter2-password\"]"),
            ("nkey_seed", "{ x = \"hunter2-seed\" }"),
        ] {
            Jail::expect_with(|jail| {
                jail.create_file("bad.toml", &format!("[nats]\n{key} = {value}\n"))?;
                let text = error_text(load_file(jail, "bad.toml"));
                assert!(!text.contains("hunter2"), "{text}");
                assert!(text.contains(&format!("nats.{key}")), "{text}");
                Ok(())
            });
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        Jail::expect_with(|jail| {
            jail.create_file("token", "abcdefghijklmnopqrstuvwxyz\n")?;
            jail.set_env(
                "PC_EVENTD_PROCESS_COMPOSE__TOKEN_FILE",
                jail.directory().join("token").display(),
            );
            let config = Config::load(&Sources::default()).unwrap();
            let token = config.api_token().unwrap().unwrap();
            assert_eq!(token.expose(), "abcdefghijklmnopqrstuvwxyz");
            jail.set_env(
                "PC_EVENTD_PROCESS_COMPOSE__TOKEN_FILE",
                "/nonexistent/token",
            );
            let text = error_text(Config::load(&Sources::default()));
            assert!(text.contains("process_compose.token_file"), "{text}");
            Ok(())
        });
    }
}
