//! A crashed process's last output, read from process-compose for its `crashed` event: the
//! `[crash_output]` settings, the bounded read, and the trimming and redaction (pure, tested
//! beside it).

use std::time::Duration;

use pc_eventd_events::event::ProcessOutput;
use pc_eventd_events::pattern::{ProcessPattern, any_matches};
use pc_eventd_events::process_compose::ComposeClient;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// What replaces each match of a redaction pattern.
pub const REDACTED: &str = "[REDACTED]";

/// The `[crash_output]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashOutputConfig {
    /// Read the output at all.
    pub enabled: bool,
    /// How many of the last lines to read.
    pub lines: u32,
    /// At most this many bytes of lines in an event, the newest kept.
    #[serde(with = "crate::units::byte_size")]
    pub max_bytes: u64,
    /// How long the crash event may wait for the read; past it the event goes out without
    /// lines (`output.unavailable`).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Regular expressions whose matches are replaced by `[REDACTED]`.
    #[serde(with = "patterns")]
    pub redact: Vec<Regex>,
    /// Processes whose output is never read (`NAME` or `NAMESPACE/NAME` globs).
    pub skip: Vec<ProcessPattern>,
}

impl Default for CrashOutputConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lines: 20,
            max_bytes: 4096,
            read_timeout: Duration::from_millis(500),
            redact: DEFAULT_REDACTIONS
                .iter()
                .map(|p| Regex::new(p).expect("the default patterns compile"))
                .collect(),
            skip: Vec::new(),
        }
    }
}

/// `key=value` and `key: value` for secret-looking keys, and bearer tokens.
const DEFAULT_REDACTIONS: &[&str] = &[
    r#"(?i)\b[\w.-]*(password|passwd|secret|token|api[_-]?key)[\w.-]*\b\s*[=:]\s*("[^"]*"|'[^']*'|\S+)"#,
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]+=*",
];

impl PartialEq for CrashOutputConfig {
    fn eq(&self, other: &Self) -> bool {
        let sources = |r: &[Regex]| r.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
        self.enabled == other.enabled
            && self.lines == other.lines
            && self.max_bytes == other.max_bytes
            && self.read_timeout == other.read_timeout
            && sources(&self.redact) == sources(&other.redact)
            && self.skip == other.skip
    }
}

impl CrashOutputConfig {
    /// What is wrong in this section, as (key, message); empty when nothing is.
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let mut found = Vec::new();
        if self.enabled && self.lines == 0 {
            found.push((
                "lines".to_owned(),
                "must be at least 1 (or set enabled = false)",
            ));
        }
        if self.enabled && self.max_bytes == 0 {
            found.push(("max_bytes".to_owned(), "must be greater than zero"));
        }
        if self.read_timeout.is_zero() {
            found.push(("read_timeout".to_owned(), "must be greater than zero"));
        }
        found
    }

    /// Whether the output of `namespace/name` is read.
    pub fn reads(&self, namespace: &str, name: &str) -> bool {
        self.enabled && !any_matches(&self.skip, namespace, name)
    }

    /// Reads the last lines of `name` within the read timeout. A read that times out or fails
    /// says so in `unavailable` instead of holding the event back.
    pub async fn read(&self, compose: &ComposeClient, name: &str) -> ProcessOutput {
        let read = compose.last_log_lines(name, self.lines);
        match tokio::time::timeout(self.read_timeout, read).await {
            Ok(Ok(lines)) => self.shape(lines),
            Ok(Err(err)) => ProcessOutput {
                unavailable: Some(format!("cannot read the output: {err}")),
                ..ProcessOutput::default()
            },
            Err(_) => ProcessOutput {
                unavailable: Some(format!(
                    "the output was not read within {}",
                    humantime::format_duration(self.read_timeout)
                )),
                ..ProcessOutput::default()
            },
        }
    }

    /// Redacts `lines` (oldest first), then keeps the newest that fit in `max_bytes`
    /// ([`ProcessOutput::keep_newest`]).
    pub fn shape(&self, lines: Vec<String>) -> ProcessOutput {
        let mut redacted = 0u32;
        let lines: Vec<String> = lines
            .into_iter()
            // process-compose may keep a line's end with it.
            .map(|line| line.trim_end_matches(['\n', '\r']).to_owned())
            .map(|line| {
                self.redact.iter().fold(line, |line, pattern| {
                    let found = pattern.find_iter(&line).count();
                    if found == 0 {
                        return line;
                    }
                    redacted = redacted.saturating_add(found as u32);
                    pattern.replace_all(&line, REDACTED).into_owned()
                })
            })
            .collect();
        ProcessOutput {
            lines,
            truncated: false,
            redacted,
            unavailable: None,
        }
        .keep_newest(usize::try_from(self.max_bytes).unwrap_or(usize::MAX))
    }
}

/// Redaction patterns as the strings they are written as; a bad one is a configuration error
/// naming its key.
mod patterns {
    use regex::Regex;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        patterns: &[Regex],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(patterns.iter().map(Regex::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Regex>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|err| {
                    serde::de::Error::custom(format!("`{p}` is not a regular expression: {err}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn secrets_are_redacted_and_counted() {
        let config = CrashOutputConfig::default();
        let out = config.shape(lines(&[
            "connecting with DB_PASSWORD=hunter2 and api_key: 'abc def'",
            "Authorization: Bearer eyJhbGciOi.x-y_z",
            "token=1 then secret=2",
            "nothing to see",
        ]));
        assert_eq!(
            out.lines,
            lines(&[
                "connecting with [REDACTED] and [REDACTED]",
                "Authorization: [REDACTED]",
                "[REDACTED] then [REDACTED]",
                "nothing to see",
            ])
        );
        assert_eq!(out.redacted, 5);
        assert!(!out.truncated);
    }

    #[test]
    fn line_ends_are_not_part_of_a_line() {
        let config = CrashOutputConfig::default();
        let out = config.shape(lines(&["one\n", "two\r\n", "", "three"]));
        assert_eq!(out.lines, lines(&["one", "two", "", "three"]));
    }

    #[test]
    fn no_patterns_keep_the_lines_as_they_are() {
        let config = CrashOutputConfig {
            redact: Vec::new(),
            ..CrashOutputConfig::default()
        };
        let out = config.shape(lines(&["password=x"]));
        assert_eq!(out.lines, lines(&["password=x"]));
        assert_eq!(out.redacted, 0);
    }

    #[test]
    fn the_byte_cap_keeps_the_newest_lines() {
        let config = CrashOutputConfig {
            max_bytes: 10,
            redact: Vec::new(),
            ..CrashOutputConfig::default()
        };
        let out = config.shape(lines(&["oldest", "abcd", "efghij"]));
        assert_eq!(out.lines, lines(&["abcd", "efghij"]));
        assert!(out.truncated);
        let exact = config.shape(lines(&["abcd", "efghij"]));
        assert_eq!(exact.lines, lines(&["abcd", "efghij"]));
        assert!(!exact.truncated, "exactly the cap is not truncated");
    }

    #[test]
    fn skipped_processes_are_not_read() {
        let config = CrashOutputConfig {
            skip: vec![ProcessPattern::new("batch-*")],
            ..CrashOutputConfig::default()
        };
        assert!(!config.reads("default", "batch-7"));
        assert!(config.reads("default", "web"));
        let off = CrashOutputConfig {
            enabled: false,
            ..CrashOutputConfig::default()
        };
        assert!(!off.reads("default", "web"));
    }

    #[test]
    fn configurations_differing_in_any_key_differ() {
        let base = CrashOutputConfig::default();
        assert_eq!(base, CrashOutputConfig::default());
        let changes: [fn(&mut CrashOutputConfig); 6] = [
            |c| c.enabled = false,
            |c| c.lines = 5,
            |c| c.max_bytes = 10,
            |c| c.read_timeout = Duration::from_secs(9),
            |c| c.redact = Vec::new(),
            |c| c.skip = vec![ProcessPattern::new("x")],
        ];
        for change in changes {
            let mut other = CrashOutputConfig::default();
            change(&mut other);
            assert_ne!(base, other, "{other:?}");
        }
    }

    fn client(port: u16) -> ComposeClient {
        let endpoint = pc_eventd_events::process_compose::Endpoint::from_url(&format!(
            "http://127.0.0.1:{port}"
        ))
        .unwrap();
        ComposeClient::new(endpoint, None, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_read_that_does_not_answer_within_the_bound_says_so() {
        // A listener that accepts and never answers: a stalled process-compose.
        let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = stalled.local_addr().unwrap().port();
        let config = CrashOutputConfig {
            read_timeout: Duration::from_millis(50),
            ..CrashOutputConfig::default()
        };
        let output = config.read(&client(port), "web").await;
        assert!(output.lines.is_empty());
        assert_eq!(
            output.unavailable.as_deref(),
            Some("the output was not read within 50ms")
        );
    }

    #[tokio::test]
    async fn a_read_that_fails_says_why() {
        // A port nothing listens on: bound, then closed.
        let port = {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().port()
        };
        let output = CrashOutputConfig::default()
            .read(&client(port), "web")
            .await;
        assert!(output.lines.is_empty());
        let why = output.unavailable.unwrap();
        assert!(why.starts_with("cannot read the output: "), "{why}");
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = toml::from_str::<CrashOutputConfig>("redact = ['(unclosed']").unwrap_err();
        assert!(
            err.to_string()
                .contains("`(unclosed` is not a regular expression"),
            "{err}"
        );
    }
}
