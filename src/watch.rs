//! `pc-eventd watch`: events from the stream, filtered by process, namespace, type and severity,
//! optionally starting with history.
//!
//! A thin front end over [`crate::consumer`]: the filter becomes the same subjects a library
//! consumer would use, read through an ordered ephemeral JetStream consumer.

use std::io::Write;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::config::NatsConfig;
use crate::consumer::{
    self, Consumer, ConsumerError, Delivery, EventStream, Filter, FilterError, Start,
};
use crate::event::{EventsLost, LifecycleEvent, Severity};

/// How often to look for a stream that does not exist yet.
const STREAM_RETRY: Duration = Duration::from_millis(500);

/// What to show before the live events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// Nothing: new events only.
    #[default]
    None,
    /// Events stored since this time.
    Since(SystemTime),
    /// Everything the stream holds.
    All,
    /// The last event of every process, one line each.
    LastState,
}

impl History {
    fn start(self) -> Start {
        match self {
            Self::None => Start::New,
            Self::Since(at) => Start::Since(at),
            Self::All => Start::All,
            Self::LastState => Start::LastPerSubject,
        }
    }
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `09:53:31.123 ERROR jobs/crasher crashed (exit=3)`; `styled` puts a severity icon in place
    /// of the word and colours the line (for a terminal).
    Text { styled: bool },
    /// One event object per line, exactly as published.
    Json,
}

/// The seed's one-line format. The time is the event's own (UTC).
pub fn format_line(event: &LifecycleEvent, styled: bool) -> String {
    styled_line(&event.timestamp, event.severity, &event.summary(), styled)
}

/// `HH:MM:SS.mmm SEVERITY summary` from an RFC 3339 `timestamp`; `styled`: an icon for the
/// severity and colour (for a terminal).
pub fn styled_line(timestamp: &str, severity: Severity, summary: &str, styled: bool) -> String {
    let time = timestamp.get(11..23).unwrap_or(timestamp);
    if !styled {
        return format!("{time} {:<5} {summary}", severity.word());
    }
    // ANSI: dim, none, yellow, red.
    let (icon, colour) = match severity {
        Severity::Debug => ("🔍", "\x1b[2m"),
        Severity::Info => ("ℹ️", ""),
        Severity::Warning => ("⚠️", "\x1b[33m"),
        Severity::Error => ("❌", "\x1b[31m"),
    };
    let reset = if colour.is_empty() { "" } else { "\x1b[0m" };
    format!("{time} {icon}  {colour}{summary}{reset}")
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

/// Prints matching events to `out` until `stop` resolves, the connection ends, or `out` is
/// closed (a closed pipe ends the watch quietly). "Watching events" goes to stderr once every
/// event from then on is sure to be shown.
pub async fn watch(
    nats: &NatsConfig,
    filter: &Filter,
    history: History,
    output: Output,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), WatchError> {
    tokio::pin!(stop);
    let consumer = Consumer::connect(nats).await?;
    let subjects = consumer.subjects(filter)?.join(" ");
    let mut events = tokio::select! {
        () = &mut stop => return Ok(()),
        events = subscribe(&consumer, &nats.stream.name, &subjects, filter, history) => events?,
    };
    if history == History::LastState {
        let history = tokio::select! {
            () = &mut stop => return Ok(()),
            history = events.history() => history?,
        };
        for delivery in consumer::latest_per_process(history) {
            if !print(out, output, &delivery)? {
                return Ok(());
            }
        }
    }
    loop {
        let delivery = tokio::select! {
            () = &mut stop => return Ok(()),
            delivery = events.next() => match delivery {
                Some(Ok(delivery)) => delivery,
                // Never quietly: a gap in the record is shown like an error event.
                Some(Err(ConsumerError::EventsLost(marker))) => {
                    if !print_loss(out, output, &marker)? {
                        return Ok(());
                    }
                    continue;
                }
                // A failed pull while NATS is away; the ordered consumer recreates itself from
                // where it was once the server is back.
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "reading events");
                    continue;
                }
                None => return Ok(()),
            },
        };
        if !print(out, output, &delivery)? {
            return Ok(());
        }
    }
}

/// Subscribes, waiting for the stream if the daemon has not created it yet.
async fn subscribe(
    consumer: &Consumer,
    stream: &str,
    subjects: &str,
    filter: &Filter,
    history: History,
) -> Result<EventStream, ConsumerError> {
    let mut start = history.start();
    let mut waiting = false;
    loop {
        match consumer.subscribe(filter, start).await {
            Ok(events) => {
                if !waiting {
                    eprintln!("Watching events: {subjects}");
                }
                tracing::info!(subjects, "watching");
                return Ok(events);
            }
            Err(ConsumerError::NoStream(_)) if !waiting => {
                // Everything a stream created from now on holds is newer than this watch, so
                // "new only" becomes "all" and nothing published in between is lost.
                if start == Start::New {
                    start = Start::All;
                }
                waiting = true;
                eprintln!(
                    "Watching events: {subjects} (waiting for stream {stream} to be created)"
                );
            }
            Err(ConsumerError::NoStream(_)) => {}
            Err(err) => return Err(err),
        }
        tokio::time::sleep(STREAM_RETRY).await;
    }
}

/// Prints one event; `false` once `out` is a closed pipe.
fn print(
    out: &mut (dyn Write + Send),
    output: Output,
    delivery: &Delivery,
) -> Result<bool, WatchError> {
    let line = match output {
        Output::Text { styled } => format_line(&delivery.event, styled),
        Output::Json => String::from_utf8_lossy(&delivery.payload).into_owned(),
    };
    write_line(out, &line)
}

/// Prints a loss marker: `10:00:31.000 ERROR 412 events of web-01 were lost between … (outbox_full)`.
fn print_loss(
    out: &mut (dyn Write + Send),
    output: Output,
    marker: &EventsLost,
) -> Result<bool, WatchError> {
    let line = match output {
        Output::Json => serde_json::to_string(marker).expect("markers always serialize"),
        Output::Text { styled } => {
            let lost = ConsumerError::EventsLost(Box::new(marker.clone()));
            styled_line(
                &marker.timestamp,
                marker.severity,
                &lost.to_string(),
                styled,
            )
        }
    };
    write_line(out, &line)
}

fn write_line(out: &mut (dyn Write + Send), line: &str) -> Result<bool, WatchError> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(WatchError::Output(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crashed() -> LifecycleEvent {
        serde_json::from_value(serde_json::json!({
            "id": "x", "type": "crashed", "process": "crasher", "namespace": "jobs",
            "timestamp": "2026-11-27T09:53:31.123Z", "subject": "core.process.jobs.crasher.crashed",
            "severity": "error", "seq": 1, "source": "test", "exit_code": 3,
            "state": {"name": "crasher", "namespace": "jobs", "namespaces": ["jobs"],
                      "status": "Completed", "is_ready": "-", "has_ready_probe": false,
                      "restarts": 0, "exit_code": 3, "is_running": false, "pid": 7}
        }))
        .unwrap()
    }

    #[test]
    fn plain_lines_name_the_severity_and_styled_ones_show_an_icon_in_colour() {
        assert_eq!(
            format_line(&crashed(), false),
            "09:53:31.123 ERROR jobs/crasher crashed (exit=3)"
        );
        assert_eq!(
            format_line(&crashed(), true),
            "09:53:31.123 ❌  \x1b[31mjobs/crasher crashed (exit=3)\x1b[0m"
        );
    }
}
