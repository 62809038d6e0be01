//! The `[process_compose]` section: where process-compose listens and how it is watched.

use std::path::PathBuf;
use std::time::Duration;

use pc_eventd_events::nats::{Secret, SettingsError};
use pc_eventd_events::process_compose::{ComposeClient, Endpoint};
use serde::{Deserialize, Serialize};

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
    /// How long a run with a readiness probe may stay not Ready before it is `unhealthy`
    /// (`never_ready`). Unset: from each process's probe (initial delay + period × failure
    /// threshold), or 60 s where process-compose does not say.
    #[serde(default, with = "humantime_serde")]
    pub readiness_grace: Option<Duration>,
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
            readiness_grace: None,
        }
    }
}

impl ProcessComposeConfig {
    /// What is wrong in this section, as (key, message); empty when nothing is.
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let url_ok = self
            .url
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
        let rules = [
            ("url", url_ok, "expected an http://host:port URL"),
            (
                "poll_interval",
                !self.poll_interval.is_zero(),
                "must be greater than zero",
            ),
            (
                "request_timeout",
                !self.request_timeout.is_zero(),
                "must be greater than zero",
            ),
            (
                "max_backoff",
                self.max_backoff >= self.poll_interval,
                "must be at least poll_interval",
            ),
            (
                "reconcile_interval",
                !self.reconcile_interval.is_zero(),
                "must be greater than zero",
            ),
            (
                "readiness_grace",
                self.readiness_grace.is_none_or(|grace| !grace.is_zero()),
                "must be greater than zero (leave it out to derive it from each probe)",
            ),
            (
                "token_file",
                self.token.is_none() || self.token_file.is_none(),
                "set either token or token_file, not both",
            ),
        ];
        rules
            .into_iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(key, _, message)| (key.to_owned(), message))
            .collect()
    }

    /// The API token, from `token` or `token_file` (read now, whitespace trimmed).
    pub fn api_token(&self) -> Result<Option<Secret>, SettingsError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        Ok(Some(Secret::read_value_file(
            "process_compose.token_file",
            path,
        )?))
    }

    /// A client for this process-compose, with the token read now.
    pub fn client(&self) -> Result<ComposeClient, SettingsError> {
        let endpoint = match &self.socket {
            Some(path) => Endpoint::Unix(path.clone()),
            // `problems` refuses a URL that does not parse; the default stands in for one
            // that slipped past it.
            None => Endpoint::from_url(&self.url).unwrap_or_else(|_| Endpoint::Tcp {
                authority: "127.0.0.1:8080".into(),
                base_path: String::new(),
            }),
        };
        Ok(ComposeClient::new(
            endpoint,
            self.api_token()?,
            self.request_timeout,
        ))
    }

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
