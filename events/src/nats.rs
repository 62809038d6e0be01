//! NATS settings shared by the daemon and every consumer: the servers, authentication and TLS,
//! the subject prefix and the stream. Plain data (serde), with the one way to connect.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{DEFAULT_SUBJECT_PREFIX, SubjectLayout, SubjectScheme};

/// A NATS setting that cannot be used. Messages name the key and the file, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file named by a setting cannot be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Unreadable {
        /// The setting, e.g. `nats.creds_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// `nkey_seed_file` holds something else than a user seed.
    #[error("nats.nkey_seed_file: {} does not hold a user nkey seed ({NKEY_SEED_FORM})", path.display())]
    NotASeed {
        /// The file.
        path: PathBuf,
    },
    /// `creds_file` is not a credentials file.
    #[error("nats.creds_file: {}: {source}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What async-nats found wrong with it.
        source: std::io::Error,
    },
}

/// The `nats.*` settings (`[nats]` in the daemon's configuration): the servers, authentication
/// and TLS, the subject prefix and the stream ([`StreamConfig`], `nats.stream.*`).
///
/// The daemon, `pc-eventd watch` and [`Consumer::connect`](crate::consumer::Consumer::connect)
/// all read the same settings, so a consumer given the daemon's configuration finds its stream
/// and subjects. Every key has a default ([`NatsConfig::default`]: `nats://127.0.0.1:4222`, no
/// authentication); unknown keys are refused. At most one authentication method should be set;
/// the daemon's configuration check enforces that, this type does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One server URL, or several separated by commas. `tls://` requires TLS. Credentials do not
    /// belong here (they would be logged): use `user`/`password`, `token`, an nkey or a creds file.
    pub url: String,
    /// Subjects are `{subject_prefix}.{namespace}.{name}.{event_type}`.
    pub subject_prefix: String,
    /// Where the source goes in a subject: `plain` (none, the default) or `by_source`
    /// (`{subject_prefix}.{source}.{namespace}.{name}.{event_type}`, for many hosts into one
    /// stream). Consumers must use the daemons' layout to find their events.
    pub subject_layout: SubjectLayout,
    /// Longest wait for a connection (default 5 s), e.g. `"5s"`. [`NatsConfig::connect`] does
    /// not apply it itself: callers put it in the options they pass, as
    /// [`Consumer::connect`](crate::consumer::Consumer::connect) does.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for JetStream to acknowledge a publish before retrying it.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// User name for user/password authentication; needs `password`.
    pub user: Option<String>,
    /// Password for user/password authentication; needs `user`.
    pub password: Option<Secret>,
    /// Token authentication.
    pub token: Option<Secret>,
    /// NKey authentication: a user seed (`SU…`), given here or in `nkey_seed_file`.
    pub nkey_seed: Option<Secret>,
    /// File holding the nkey user seed (read at start and on every reload; whitespace trimmed).
    pub nkey_seed_file: Option<PathBuf>,
    /// A credentials file (user JWT and nkey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
    /// Refuse servers that do not offer TLS. A `tls://` URL implies it.
    pub tls_required: bool,
    /// PEM file of CA certificates to trust instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (mutual TLS); needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// The stream the events are kept in (`nats.stream.*`).
    pub stream: StreamConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            subject_layout: SubjectLayout::Plain,
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            stream: StreamConfig::default(),
        }
    }
}

impl NatsConfig {
    /// The subject scheme under `subject_prefix`, in `subject_layout`: where events are
    /// published and what filters subscribe to.
    pub fn subjects(&self) -> SubjectScheme {
        SubjectScheme::new(self.subject_prefix.clone()).with_layout(self.subject_layout)
    }

    /// The servers in `url`: one, or several separated by commas.
    pub fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `options` plus this configuration's authentication and TLS settings. Reads
    /// `nkey_seed_file` and `creds_file`; errors name the key and the path, never a secret.
    pub fn connect_options(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, SettingsError> {
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(seed) = self.nkey_seed()? {
            options = options.nkey(seed.expose().to_owned());
        }
        if let Some(path) = &self.creds_file {
            let creds = Secret::read_file("nats.creds_file", path)?;
            options = options.credentials(creds.expose()).map_err(|source| {
                SettingsError::Credentials {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        let tls_url = self.servers().iter().any(|s| {
            s.parse::<async_nats::ServerAddr>()
                .is_ok_and(|a| a.tls_required())
        });
        if self.tls_required || tls_url {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }

    /// Connects to the servers in `url` with `options` (name, callbacks, retry policy) plus
    /// [`NatsConfig::connect_options`]. The daemon and `watch` both connect through this.
    pub async fn connect(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let options = self.connect_options(options).map_err(|err| {
            async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, err)
        })?;
        options.connect(self.servers()).await
    }

    /// The nkey user seed, from `nkey_seed` or `nkey_seed_file`.
    pub fn nkey_seed(&self) -> Result<Option<Secret>, SettingsError> {
        if let Some(seed) = &self.nkey_seed {
            return Ok(Some(seed.clone()));
        }
        let Some(path) = &self.nkey_seed_file else {
            return Ok(None);
        };
        let seed = Secret::read_value_file("nats.nkey_seed_file", path)?;
        if !is_user_seed(seed.expose()) {
            return Err(SettingsError::NotASeed { path: path.clone() });
        }
        Ok(Some(seed))
    }
}

/// What an nkey user seed looks like, for messages.
pub const NKEY_SEED_FORM: &str = "expected 58 characters starting with SU";

/// Whether `seed` looks like an nkey user seed. The full check (checksum, key) happens when
/// connecting; this catches a public key or a truncated paste early.
pub fn is_user_seed(seed: &str) -> bool {
    seed.len() == 58 && seed.starts_with("SU") && seed.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The `nats.stream.*` settings: the JetStream stream the daemon creates (or updates) and
/// publishes into. Consumers use only its `name`; the rest applies when the daemon creates or
/// updates the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// The stream's name (default `PROCESS_EVENTS`); the daemon's state bucket is
    /// `{name}_STATE`.
    pub name: String,
    /// How long the stream keeps an event (default 24 h).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Window in which JetStream drops a message whose `Nats-Msg-Id` it has seen.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How many copies of the stream the servers keep (default 1; the daemon's configuration
    /// allows 1 to 5); more than 1 needs a NATS cluster.
    pub replicas: usize,
    /// Where the stream keeps its messages (default [`Storage::File`]). It cannot be changed on
    /// an existing stream.
    pub storage: Storage,
    /// What to do when the stream exists with other settings.
    pub on_mismatch: OnMismatch,
}

impl StreamConfig {
    /// The daemon's key-value bucket of the last state of every process it tracks:
    /// `{name}_STATE`. Each value is a JSON object whose `last_event` is the last
    /// [`LifecycleEvent`](crate::event::LifecycleEvent) published of that process (read by
    /// [`Consumer::last_events`](crate::consumer::Consumer::last_events)); the rest is the
    /// daemon's own.
    pub fn state_bucket(&self) -> String {
        format!("{}_STATE", self.name)
    }
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

/// Where JetStream stores the stream's messages: `nats.stream.storage`, `"file"` or `"memory"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk: the events survive a restart of nats-server.
    File,
    /// In memory: lost when nats-server restarts.
    Memory,
}

/// What the daemon does when the stream already exists with other settings:
/// `nats.stream.on_mismatch`, `"update"` or `"fail"`. A different `storage` is refused either
/// way, since an existing stream's storage cannot be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMismatch {
    /// Update the stream to our settings, logging what changed.
    Update,
    /// Refuse to start, naming the settings that differ.
    Fail,
}

/// A secret value: never printed, never logged, redacted when serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the secret held in the file `path`, as it is (a credentials file keeps its
    /// lines); the error names the setting `key` (such as `nats.creds_file`) and the path,
    /// never the content. The one way a secret is read from a file.
    pub fn read_file(key: &'static str, path: &Path) -> Result<Self, SettingsError> {
        std::fs::read_to_string(path)
            .map(Self)
            .map_err(|source| SettingsError::Unreadable {
                key,
                path: path.to_owned(),
                source,
            })
    }

    /// Reads a one-value secret (a token, a seed) from the file `path`, without the whitespace
    /// around it (a trailing newline, typically); errors as [`Secret::read_file`].
    pub fn read_value_file(key: &'static str, path: &Path) -> Result<Self, SettingsError> {
        let read = Self::read_file(key, path)?;
        Ok(Self::new(read.expose().trim()))
    }

    /// The value itself, for where it must be used (handing it to a client). Never log or
    /// print what this returns.
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
