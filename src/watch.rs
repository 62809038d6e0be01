//! `pc-eventd watch`: live events, filtered by process, namespace, type and severity.
//!
//! Filters become subscription subjects of the same five-token shape the daemon publishes
//! (`{prefix}.{namespace}.{name}.{type}`), with `*` for what is not filtered: a bare process name
//! matches it in every namespace, and a type matches it for every process. Each requested type is
//! its own subscription.

use std::io::Write;

use futures::StreamExt;
use futures::stream::select_all;

use crate::config::NatsConfig;
use crate::event::{EventType, LifecycleEvent, Severity, SubjectScheme};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("--process {process} names namespace {process_ns} but --namespace is {namespace}")]
    NamespaceConflict {
        process: String,
        process_ns: String,
        namespace: String,
    },
    #[error("--process must not be empty")]
    EmptyProcess,
}

/// What to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `name` or `namespace/name`.
    pub process: Option<String>,
    pub namespace: Option<String>,
    pub types: Vec<EventType>,
    /// Events below this severity are hidden unless their type was asked for by name.
    pub min_severity: Option<Severity>,
}

impl Filter {
    /// The subjects to subscribe to.
    pub fn subjects(&self, scheme: &SubjectScheme) -> Result<Vec<String>, FilterError> {
        let (mut namespace, name) = match self.process.as_deref() {
            Some("") => return Err(FilterError::EmptyProcess),
            Some(process) => match process.split_once('/') {
                Some((ns, name)) if !ns.is_empty() => (Some(ns), Some(name)),
                _ => (None, Some(process)),
            },
            None => (None, None),
        };
        if let Some(wanted) = self.namespace.as_deref() {
            match namespace {
                Some(ns) if ns != wanted => {
                    return Err(FilterError::NamespaceConflict {
                        process: self.process.clone().unwrap_or_default(),
                        process_ns: ns.to_owned(),
                        namespace: wanted.to_owned(),
                    });
                }
                _ => namespace = Some(wanted),
            }
        }
        if self.types.is_empty() {
            return Ok(vec![scheme.filter(namespace, name, None)]);
        }
        let mut types = self.types.clone();
        types.sort();
        types.dedup();
        Ok(types
            .into_iter()
            .map(|t| scheme.filter(namespace, name, Some(t)))
            .collect())
    }

    /// Whether an event that matched the subjects is shown.
    pub fn shows(&self, event: &LifecycleEvent) -> bool {
        self.types.contains(&event.event_type)
            || self.min_severity.is_none_or(|min| event.severity >= min)
    }
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `09:53:31.123 ℹ️  default/nats started`
    Text,
    /// One event object per line, exactly as published.
    Json,
}

/// The seed's one-line format. The time is the event's own (UTC).
pub fn format_line(event: &LifecycleEvent) -> String {
    let time = event.timestamp.get(11..23).unwrap_or(&event.timestamp);
    let icon = match event.severity {
        Severity::Debug => "🔍",
        Severity::Info => "ℹ️",
        Severity::Warning => "⚠️",
        Severity::Error => "❌",
    };
    format!("{time} {icon}  {}", event.summary())
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

/// Prints matching events to `out` until `stop` resolves, the connection ends, or `out` is
/// closed (a closed pipe ends the watch quietly).
pub async fn watch(
    nats: &NatsConfig,
    scheme: &SubjectScheme,
    filter: &Filter,
    output: Output,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), WatchError> {
    let subjects = filter.subjects(scheme)?;
    // The daemon's authentication, TLS and server list (see `NatsConfig::connect`).
    let options = async_nats::ConnectOptions::new()
        .name("pc-eventd watch")
        .connection_timeout(nats.connect_timeout);
    let client = nats
        .connect(options)
        .await
        .map_err(|source| WatchError::Connect {
            url: nats.url.clone(),
            source,
        })?;
    let mut subscriptions = Vec::with_capacity(subjects.len());
    for subject in &subjects {
        let subscription =
            client
                .subscribe(subject.clone())
                .await
                .map_err(|source| WatchError::Subscribe {
                    subject: subject.clone(),
                    source,
                })?;
        subscriptions.push(subscription);
    }
    // The subscriptions exist on the server once the flush returns; only then is "watching"
    // true, which is what a caller that waits for this line relies on.
    client
        .flush()
        .await
        .map_err(|e| WatchError::Output(std::io::Error::other(e)))?;
    tracing::info!(subjects = %subjects.join(" "), "watching");
    eprintln!("Watching events: {}", subjects.join(" "));

    let mut messages = select_all(subscriptions);
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            () = &mut stop => return Ok(()),
            message = messages.next() => match message {
                Some(message) => message,
                None => return Ok(()),
            },
        };
        let event: LifecycleEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(subject = %message.subject, error = %err, "skipping a message that is not a lifecycle event");
                continue;
            }
        };
        if !filter.shows(&event) {
            continue;
        }
        let written = match output {
            Output::Text => writeln!(out, "{}", format_line(&event)),
            Output::Json => out
                .write_all(&message.payload)
                .and_then(|()| out.write_all(b"\n")),
        }
        .and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(err) => return Err(WatchError::Output(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(filter: Filter) -> Vec<String> {
        filter.subjects(&SubjectScheme::default()).unwrap()
    }

    #[test]
    fn no_filter_watches_everything() {
        assert_eq!(subjects(Filter::default()), ["core.process.*.*.*"]);
    }

    #[test]
    fn a_bare_process_name_matches_every_namespace() {
        let filter = Filter {
            process: Some("nats".into()),
            ..Filter::default()
        };
        assert_eq!(subjects(filter), ["core.process.*.nats.*"]);
    }

    #[test]
    fn namespace_slash_name_pins_both() {
        let filter = Filter {
            process: Some("default/pocketbase".into()),
            ..Filter::default()
        };
        assert_eq!(subjects(filter), ["core.process.default.pocketbase.*"]);
    }

    #[test]
    fn a_type_matches_every_process_and_types_add_up() {
        let filter = Filter {
            types: vec![EventType::Unhealthy, EventType::Crashed, EventType::Crashed],
            ..Filter::default()
        };
        assert_eq!(
            subjects(filter),
            ["core.process.*.*.crashed", "core.process.*.*.unhealthy"]
        );
    }

    #[test]
    fn combined_filters_and_odd_names() {
        let filter = Filter {
            process: Some("api.v2".into()),
            namespace: Some("shop".into()),
            types: vec![EventType::Crashed],
            ..Filter::default()
        };
        assert_eq!(subjects(filter), ["core.process.shop.api%2Ev2.crashed"]);
    }

    #[test]
    fn conflicting_namespaces_are_an_error() {
        let filter = Filter {
            process: Some("a/web".into()),
            namespace: Some("b".into()),
            ..Filter::default()
        };
        assert!(filter.subjects(&SubjectScheme::default()).is_err());
    }
}
