//! Layered configuration: built-in defaults < TOML file < `PC_EVENTD_*` environment < flags.
//!
//! Every struct denies unknown fields, so a typo in `/etc/pc-eventd.toml` or a stray
//! `PC_EVENTD_*` variable is an error naming the key and where it came from, not a setting
//! silently ignored. `config/pc-eventd.toml` documents every key; a test checks that it parses to
//! exactly these defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{DEFAULT_SUBJECT_PREFIX, SubjectScheme};

/// Where the daemon looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pc-eventd.toml";
/// Prefix of the environment variables; nested keys are joined with `__`.
pub const ENV_PREFIX: &str = "PC_EVENTD_";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub process_compose: ProcessComposeConfig,
    pub nats: NatsConfig,
    pub health: HealthConfig,
    pub daemon: DaemonConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Serve `/healthz`, `/readyz` and `/metrics`.
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9470)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// After SIGTERM, how long unacknowledged events may still be retried before exiting.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessComposeConfig {
    /// Base URL of the REST API.
    pub url: String,
    /// A unix socket to use instead of `url` (process-compose `-U -u PATH`).
    pub socket: Option<PathBuf>,
    /// API token, sent as `X-PC-Token-Key`.
    pub token: Option<Secret>,
    /// File holding the API token (read at start and on every reload; whitespace trimmed).
    pub token_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait between polls while process-compose keeps failing.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Where states come from: the push stream, polling, or the stream when the server has it.
    pub mode: SourceMode,
    /// In stream mode, how often `GET /processes` checks for processes added or removed (the
    /// stream sends no frames for those).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Names this process-compose instance in events; defaults to the URL or socket path.
    /// Event ids include it, so keep it stable.
    pub source: Option<String>,
}

impl Default for ProcessComposeConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            socket: None,
            token: None,
            token_file: None,
            poll_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            mode: SourceMode::Auto,
            reconcile_interval: Duration::from_secs(30),
            source: None,
        }
    }
}

impl ProcessComposeConfig {
    /// The `source` field of events.
    pub fn source(&self) -> String {
        match (&self.source, &self.socket) {
            (Some(source), _) => source.clone(),
            (None, Some(socket)) => format!("unix:{}", socket.display()),
            (None, None) => self.url.clone(),
        }
    }
}

/// How pc-eventd learns about state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// The stream when the server has it (v1.110.0+), else polling.
    Auto,
    /// process-compose's WebSocket state stream: every step, as it happens.
    Stream,
    /// `GET /processes` every `poll_interval`: steps between two polls are merged.
    Poll,
}

impl SourceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Stream => "stream",
            Self::Poll => "poll",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: String,
    /// Subjects are `{subject_prefix}.{namespace}.{name}.{event_type}`.
    pub subject_prefix: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for JetStream to acknowledge a publish before retrying it.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    pub stream: StreamConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            stream: StreamConfig::default(),
        }
    }
}

impl NatsConfig {
    pub fn subjects(&self) -> SubjectScheme {
        SubjectScheme::new(self.subject_prefix.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    pub name: String,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Window in which JetStream drops a message whose `Nats-Msg-Id` it has seen.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    pub replicas: usize,
    pub storage: Storage,
    /// What to do when the stream exists with other settings.
    pub on_mismatch: OnMismatch,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            name: "PROCESS_EVENTS".into(),
            max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            storage: Storage::File,
            on_mismatch: OnMismatch::Update,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    File,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMismatch {
    /// Update the stream to our settings, logging what changed.
    Update,
    /// Refuse to start, naming the settings that differ.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `info,async_nats=warn`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald when systemd connected stderr to the journal (`JOURNAL_STREAM`), else text.
    Auto,
    Text,
    Json,
    Journald,
}

/// A secret value: never printed, never logged, redacted when serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Accepts numbers and booleans too: figment parses environment values, so a numeric token
    /// in `PC_EVENTD_PROCESS_COMPOSE__TOKEN` arrives as an integer.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Signed(i64),
            Unsigned(u64),
            Float(f64),
            Bool(bool),
        }
        Ok(Self(match Raw::deserialize(deserializer)? {
            Raw::Text(s) => s,
            Raw::Signed(n) => n.to_string(),
            Raw::Unsigned(n) => n.to_string(),
            Raw::Float(n) => n.to_string(),
            Raw::Bool(b) => b.to_string(),
        }))
    }
}

/// Keys whose values must never appear in messages.
const SECRET_KEYS: &[&str] = &["token"];

/// Settings given on the command line: the top layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub compose_url: Option<String>,
    pub compose_port: Option<u16>,
    pub compose_socket: Option<PathBuf>,
    pub nats_url: Option<String>,
    pub poll_interval: Option<Duration>,
}

impl Overrides {
    fn entries(&self) -> Vec<(&'static str, &'static str, figment::value::Value)> {
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
            entries.push(("process_compose.url", flag, url.into()));
        }
        if let Some(socket) = &self.compose_socket {
            let socket = socket.display().to_string();
            entries.push(("process_compose.socket", "--compose-socket", socket.into()));
        }
        if let Some(url) = &self.nats_url {
            entries.push(("nats.url", "--nats-url", url.clone().into()));
        }
        if let Some(interval) = self.poll_interval {
            let interval = humantime::format_duration(interval).to_string();
            entries.push((
                "process_compose.poll_interval",
                "--poll-interval",
                interval.into(),
            ));
        }
        entries
    }

    fn flag_for(&self, key: &str) -> Option<&'static str> {
        self.entries()
            .into_iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, flag, _)| flag)
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        let flags = self.clone();
        Metadata::named("command-line flag").interpolater(move |_, path| {
            let key = path.join(".");
            flags.flag_for(&key).map_or(key, str::to_owned)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut figment = Figment::new();
        for (key, _, value) in self.entries() {
            figment = figment.merge(Serialized::default(key, value));
        }
        figment.data()
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

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl Config {
    /// Loads and validates the layered configuration.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let figment = figment(sources)?;
        let config: Config = figment.extract().map_err(|err| ConfigError {
            problems: err
                .into_iter()
                .map(|e| describe_figment_error(&e))
                .collect(),
        })?;
        config.validate(&figment)?;
        Ok(config)
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration always serializes")
    }

    /// The process-compose API token, from `token` or `token_file`.
    pub fn api_token(&self) -> Result<Option<Secret>, ConfigError> {
        let pc = &self.process_compose;
        if let Some(token) = &pc.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &pc.token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(format!(
                "process_compose.token_file: cannot read {}: {e}",
                path.display()
            ))
        })?;
        Ok(Some(Secret::new(token.trim())))
    }

    fn validate(&self, figment: &Figment) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |key: &str, ok: bool, message: &str| {
            if !ok {
                problems.push(format!("{key} (from {}): {message}", origin(figment, key)));
            }
        };
        let pc = &self.process_compose;
        let url_ok = pc
            .url
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
        check(
            "process_compose.url",
            url_ok,
            "expected an http://host:port URL",
        );
        check(
            "process_compose.poll_interval",
            !pc.poll_interval.is_zero(),
            "must be greater than zero",
        );
        check(
            "process_compose.request_timeout",
            !pc.request_timeout.is_zero(),
            "must be greater than zero",
        );
        check(
            "process_compose.max_backoff",
            pc.max_backoff >= pc.poll_interval,
            "must be at least poll_interval",
        );
        check(
            "process_compose.reconcile_interval",
            !pc.reconcile_interval.is_zero(),
            "must be greater than zero",
        );
        check(
            "process_compose.token_file",
            pc.token.is_none() || pc.token_file.is_none(),
            "set either token or token_file, not both",
        );
        let nats = &self.nats;
        check(
            "nats.url",
            !nats.url.trim().is_empty(),
            "must name at least one server",
        );
        check(
            "nats.subject_prefix",
            is_literal_subject(&nats.subject_prefix),
            "must be a literal subject: dot-separated, non-empty tokens without spaces, `*` or `>`",
        );
        check(
            "nats.ack_timeout",
            !nats.ack_timeout.is_zero(),
            "must be greater than zero",
        );
        let stream = &nats.stream;
        check(
            "nats.stream.name",
            !stream.name.is_empty()
                && !stream.name.contains(|c: char| {
                    c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\')
                }),
            "must be non-empty, without spaces, `.`, `*`, `>`, `/` or `\\`",
        );
        check(
            "nats.stream.replicas",
            (1..=5).contains(&stream.replicas),
            "must be between 1 and 5",
        );
        check(
            "nats.stream.duplicate_window",
            !stream.duplicate_window.is_zero() && stream.duplicate_window <= stream.max_age,
            "must be greater than zero and no longer than max_age",
        );
        check(
            "log.level",
            tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok(),
            "not a valid tracing filter (e.g. `info` or `info,async_nats=warn`)",
        );
        if problems.is_empty() {
            self.api_token().map(|_| ())
        } else {
            Err(ConfigError { problems })
        }
    }
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
    let is_secret = path.last().is_some_and(|k| SECRET_KEYS.contains(k));
    let message = match &error.kind {
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) if is_secret => {
            format!("invalid value (not shown), expected {expected}")
        }
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
