//! The `[dashboard]` section: where the page is served and who may read it.

use std::net::SocketAddr;
use std::path::PathBuf;

use pc_eventd_events::nats::{Secret, SettingsError};
use serde::{Deserialize, Serialize};

/// `pc-eventd dashboard`: where it listens, its access token, how much history a page opens
/// with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Where the page is served. Loopback unless an access token is set: the page shows every
    /// process of every host.
    pub listen: SocketAddr,
    /// A file holding the access token (read at start, whitespace trimmed). With it, the page
    /// asks for the token once and keeps it in a cookie; without it, only loopback may listen.
    /// Never a value in the configuration or on the command line, where `ps` and logs show it.
    pub token_file: Option<PathBuf>,
    /// How many of the most recent events a newly opened page starts its timeline with (the
    /// processes' current state comes besides, whatever their age).
    pub backlog: u64,
    /// Only this source's events: one host's page on a fleet's stream. Selected by the server
    /// when the daemons publish with `nats.subject_layout = "by_source"`.
    pub source: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9480)),
            token_file: None,
            backlog: 1000,
            source: None,
        }
    }
}

impl DashboardConfig {
    /// What is wrong in this section, as (key, message); empty when nothing is.
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let rules = [
            (
                "listen",
                self.listen.ip().is_loopback() || self.token_file.is_some(),
                "not a loopback address, and dashboard.token_file is not set: anyone who reaches \
                 it would see every process; set dashboard.token_file, or listen on 127.0.0.1",
            ),
            ("backlog", self.backlog <= 100_000, "must be at most 100000"),
        ];
        rules
            .into_iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(key, _, message)| (key.to_owned(), message))
            .collect()
    }

    /// The access token, read from `token_file` now; `None` without one.
    pub fn token(&self) -> Result<Option<Secret>, SettingsError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        Ok(Some(Secret::read_value_file("dashboard.token_file", path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_a_token_file() {
        let open = DashboardConfig {
            listen: "0.0.0.0:9480".parse().unwrap(),
            ..DashboardConfig::default()
        };
        let keys: Vec<String> = open.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["listen"]);
        let with_token = DashboardConfig {
            token_file: Some("/etc/pc-eventd/dashboard.token".into()),
            ..open
        };
        assert!(with_token.problems().is_empty());
        for loopback in ["127.0.0.1:9480", "[::1]:9480", "127.0.0.2:1"] {
            let config = DashboardConfig {
                listen: loopback.parse().unwrap(),
                ..DashboardConfig::default()
            };
            assert!(config.problems().is_empty(), "{loopback}");
        }
    }

    #[test]
    fn the_backlog_is_bounded() {
        let config = DashboardConfig {
            backlog: 100_001,
            ..DashboardConfig::default()
        };
        assert_eq!(config.problems()[0].0, "backlog");
        let config = DashboardConfig {
            backlog: 100_000,
            ..DashboardConfig::default()
        };
        assert!(config.problems().is_empty());
    }

    #[test]
    fn the_token_is_read_from_its_file_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let config = DashboardConfig {
            token_file: Some(path.clone()),
            ..DashboardConfig::default()
        };
        assert_eq!(config.token().unwrap().unwrap().expose(), "s3cret");
        std::fs::remove_file(&path).unwrap();
        let err = config.token().unwrap_err().to_string();
        assert!(
            err.starts_with("dashboard.token_file: cannot read"),
            "{err}"
        );
        assert!(DashboardConfig::default().token().unwrap().is_none());
    }
}
