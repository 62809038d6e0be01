//! Logging: `tracing` to journald under systemd, else text or JSON on stderr. The level comes
//! from `log.level` (and can be changed by a reload) unless `RUST_LOG` is set, which wins.

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
/// The `[log]` section.
pub struct LogConfig {
    /// A tracing filter such as `info` or `info,async_nats=warn`; `RUST_LOG` overrides it.
    pub level: String,
    /// Where and how logs are written.
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
/// The log format.
pub enum LogFormat {
    /// journald when systemd connected stderr to the journal (`JOURNAL_STREAM`), else text.
    Auto,
    /// Plain lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// The systemd journal, with fields.
    Journald,
}

/// Changes the level of the installed subscriber.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: it keeps precedence over the configuration.
    fixed: bool,
}

impl LogHandle {
    pub fn set_level(&self, level: &str) {
        if self.fixed {
            return;
        }
        match EnvFilter::try_new(level) {
            Ok(filter) => {
                if let Err(err) = self.filter.reload(filter) {
                    tracing::warn!(error = %err, "cannot change the log level");
                }
            }
            Err(err) => tracing::warn!(error = %err, level, "invalid log level"),
        }
    }
}

/// Where logs go for `format`: journald when asked for, or when `auto` and systemd connected
/// stderr to the journal (`JOURNAL_STREAM`).
fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    }
}

/// Whether output to `stream` may carry colour: only a terminal does, and not when `NO_COLOR`
/// is set to anything but an empty string (<https://no-color.org>). A file or a pipe (a log
/// under process-compose, `2> adapter.log`) gets plain text.
pub(crate) fn colour(stream: &impl std::io::IsTerminal) -> bool {
    colour_for(stream.is_terminal(), std::env::var_os("NO_COLOR"))
}

fn colour_for(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. Returns `None` if one was already installed (tests that
/// run the CLI in-process keep the first).
pub(crate) fn init(level: &str, format: LogFormat) -> Option<LogHandle> {
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour(&std::io::stderr()));
    let installed = match resolve(format) {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(journald) => registry
                .with(journald.with_syslog_identifier("pc-eventd".into()))
                .try_init(),
            Err(err) => {
                let installed = registry.with(stderr).try_init();
                tracing::warn!(error = %err, "journald is not reachable, logging to stderr");
                installed
            }
        },
        LogFormat::Json => registry.with(stderr.json().flatten_event(true)).try_init(),
        LogFormat::Text | LogFormat::Auto => registry.with(stderr).try_init(),
    };
    installed.ok().map(|()| LogHandle {
        filter: handle,
        fixed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(colour_for(true, None));
        assert!(
            colour_for(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour_for(true, Some("1".into())));
        assert!(!colour_for(false, None), "a file or a pipe");
    }
}
