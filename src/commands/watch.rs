//! `pc-eventd watch`: events from the stream, filtered by process, namespace, type and severity,
//! optionally starting with history.
//!
//! A thin front end over [`pc_eventd_events::consumer`]: the filter becomes the same subjects a library
//! consumer would use, read through an ordered ephemeral JetStream consumer.

use std::io::Write;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use pc_eventd_events::consumer::{
    self, Consumer, ConsumerError, Delivery, EventStream, Filter, FilterError, Received, Start,
};
use pc_eventd_events::event::{EventsLost, LifecycleEvent, Severity};
use pc_eventd_events::nats::NatsConfig;
use pc_eventd_events::remediation::RemediationEvent;

/// What to show before the live events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Replay {
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

impl Replay {
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
pub(crate) enum Output {
    /// `09:53:31.123 ERROR jobs/crasher crashed (exit=3)`; `styled` puts a severity icon in place
    /// of the word and colours the line (for a terminal); `crash_output` adds the last lines a
    /// crashed process printed below its line.
    Text { styled: bool, crash_output: bool },
    /// One event object per line, exactly as published.
    Json,
}

/// The seed's one-line format. The time is the event's own (UTC).
pub fn format_line(event: &LifecycleEvent, styled: bool) -> String {
    styled_line(&event.timestamp, event.severity, &event.summary(), styled)
}

/// The line of [`format_line`], then the crash output the event carries, one indented line
/// each (`  │ …`), or why there is none.
pub fn format_with_output(event: &LifecycleEvent, styled: bool) -> String {
    let mut text = format_line(event, styled);
    let Some(output) = &event.output else {
        return text;
    };
    if output.truncated {
        text.push_str("\n  │ …");
    }
    for line in &output.lines {
        text.push_str("\n  │ ");
        text.push_str(line);
    }
    if let Some(why) = &output.unavailable {
        text.push_str(&format!("\n  │ (no output: {why})"));
    }
    text
}

/// `HH:MM:SS.mmm SEVERITY summary` from an RFC 3339 `timestamp`; `styled`: an icon for the
/// severity and colour (for a terminal).
pub(crate) fn styled_line(
    timestamp: &str,
    severity: Severity,
    summary: &str,
    styled: bool,
) -> String {
    let time = timestamp.get(11..23).unwrap_or(timestamp);
    if !styled {
        return format!("{time} {:<5} {summary}", severity.word());
    }
    // ANSI: dim, none, yellow, red, bold red.
    let (icon, colour) = match severity {
        Severity::Debug => ("🔍", "\x1b[2m"),
        Severity::Info => ("ℹ️", ""),
        Severity::Warning => ("⚠️", "\x1b[33m"),
        Severity::Error => ("❌", "\x1b[31m"),
        Severity::Critical => ("🛑", "\x1b[1;31m"),
    };
    let reset = if colour.is_empty() { "" } else { "\x1b[0m" };
    format!("{time} {icon}  {colour}{summary}{reset}")
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    #[error("no answer from NATS at {url} for {}; giving up", humantime::format_duration(*.patience))]
    NatsGone { url: String, patience: Duration },
}

/// How often a watch checks its connection to NATS.
const CONNECTION_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Resolves when the reader of stdout goes away (the pipe's other end is closed, or the
/// terminal hung up), never for a file, which cannot close under its writer.
pub(crate) async fn stdout_closed() {
    let (closed, on_close) = tokio::sync::oneshot::channel();
    // poll(2) in a thread of its own: registering fd 1 with tokio's reactor needs unsafe code.
    // It reports POLLERR on a pipe's writing end once its reader has gone, without a write.
    std::thread::spawn(move || {
        use rustix::event::{PollFd, PollFlags, poll};
        let stdout = std::io::stdout();
        let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
        loop {
            match poll(&mut fds, None).map(|_| fds[0].revents()) {
                Ok(events) if events.intersects(PollFlags::ERR | PollFlags::HUP) => {
                    let _ = closed.send(());
                    return;
                }
                Ok(events) if events.contains(PollFlags::NVAL) => return,
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
    });
    if on_close.await.is_err() {
        // stdout cannot be watched: it never counts as closed
        std::future::pending::<()>().await;
    }
}

/// Connects to NATS, retrying for up to `patience` while no server answers. Other failures
/// (authentication, TLS) fail at once: retrying cannot fix them.
async fn connect(
    nats: &NatsConfig,
    patience: Duration,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<Option<Consumer>, WatchError> {
    use async_nats::ConnectErrorKind;
    let give_up_at = tokio::time::Instant::now() + patience;
    let mut said = false;
    loop {
        match Consumer::connect(nats).await {
            Ok(consumer) => return Ok(Some(consumer)),
            Err(ConsumerError::Connect { source, .. })
                if matches!(
                    source.kind(),
                    ConnectErrorKind::Io | ConnectErrorKind::TimedOut
                ) =>
            {
                if tokio::time::Instant::now() >= give_up_at {
                    return Err(nats_gone(nats, patience));
                }
                if !std::mem::replace(&mut said, true) {
                    eprintln!(
                        "pc-eventd watch: no answer from NATS at {} ({source}); retrying for up to {}",
                        nats.url,
                        humantime::format_duration(patience)
                    );
                }
            }
            Err(err) => return Err(err.into()),
        }
        tokio::select! {
            () = &mut *stop => return Ok(None),
            () = tokio::time::sleep(CONNECTION_CHECK_EVERY) => {}
        }
    }
}

fn nats_gone(nats: &NatsConfig, patience: Duration) -> WatchError {
    WatchError::NatsGone {
        url: nats.url.clone(),
        patience,
    }
}

/// Prints matching events to `out` until `stop` resolves, the connection ends, or `out` is
/// closed (a closed pipe ends the watch quietly). "Watching events" goes to stderr once every
/// event from then on is sure to be shown. NATS that does not answer for `patience`, at start
/// or later, ends it with [`WatchError::NatsGone`].
pub(crate) async fn watch(
    nats: &NatsConfig,
    filter: &Filter,
    history: Replay,
    output: Output,
    patience: Duration,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), WatchError> {
    tokio::pin!(stop);
    let Some(consumer) = connect(nats, patience, &mut stop).await? else {
        return Ok(());
    };
    tokio::select! {
        () = &mut stop => Ok(()),
        () = connection_lost(&consumer, patience) => Err(nats_gone(nats, patience)),
        shown = show(&consumer, &nats.stream.name, filter, history, output, out) => shown,
    }
}

/// Resolves once `consumer` has had no connection for `patience` (the client reconnects on
/// its own until then).
async fn connection_lost(consumer: &Consumer, patience: Duration) {
    let mut check = tokio::time::interval(CONNECTION_CHECK_EVERY);
    let mut disconnected_since: Option<tokio::time::Instant> = None;
    loop {
        check.tick().await;
        if consumer.is_connected() {
            disconnected_since = None;
        } else if disconnected_since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
            >= patience
        {
            return;
        }
    }
}

/// Prints the history asked for, then every new event, until the stream ends or `out` closes.
async fn show(
    consumer: &Consumer,
    stream: &str,
    filter: &Filter,
    history: Replay,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), WatchError> {
    let subjects = consumer.subjects(filter)?.join(" ");
    let mut events = subscribe(consumer, stream, &subjects, filter, history).await?;
    if history == Replay::LastState {
        // The last state of each process; a gap in the record is no process's state.
        let history = events.history().await?;
        let events = history
            .into_iter()
            .filter_map(Received::into_event)
            .collect();
        for delivery in consumer::latest_per_process(events) {
            if !print(out, output, &delivery)? {
                return Ok(());
            }
        }
    }
    while let Some(received) = events.next().await {
        let shown = match received {
            Ok(Received::Event(delivery)) => print(out, output, &delivery)?,
            // Never quietly: a gap in the record is shown like an error event.
            Ok(Received::EventsLost(marker)) => print_loss(out, output, &marker)?,
            // A failed pull while NATS is away; the ordered consumer recreates itself from
            // where it was once the server is back.
            Err(err) => {
                tracing::warn!(error = %err, "reading events");
                true
            }
        };
        if !shown {
            return Ok(());
        }
    }
    Ok(())
}

/// Subscribes, waiting for the stream if the daemon has not created it yet.
async fn subscribe(
    consumer: &Consumer,
    stream: &str,
    subjects: &str,
    filter: &Filter,
    history: Replay,
) -> Result<EventStream, ConsumerError> {
    let mut start = history.start();
    match consumer.subscribe(filter, start).await {
        Err(ConsumerError::NoStream(_)) => {
            eprintln!("Watching events: {subjects} (waiting for stream {stream} to be created)");
            // Everything a stream created from now on holds is newer than this watch, so
            // "new only" becomes "all" and nothing published in between is lost.
            if start == Start::New {
                start = Start::All;
            }
            consumer.wait_for_stream(std::future::pending()).await?;
        }
        Ok(events) => {
            eprintln!("Watching events: {subjects}");
            tracing::info!(subjects, "watching");
            return Ok(events);
        }
        Err(err) => return Err(err),
    }
    let events = consumer.subscribe(filter, start).await?;
    tracing::info!(subjects, "watching");
    Ok(events)
}

/// `pc-eventd watch --remediation`: prints the remediation events in the stream `nats` names,
/// optionally of one source and one process (`NAME` or `NAMESPACE/NAME`), from the first on,
/// until `stop` resolves or `out` closes.
pub(crate) async fn remediation(
    nats: &NatsConfig,
    source: Option<&str>,
    process: Option<&str>,
    output: Output,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), WatchError> {
    tokio::pin!(stop);
    let consumer = Consumer::connect(nats).await?;
    // The remediator creates the stream when it first starts.
    if !consumer.wait_for_stream(&mut stop).await? {
        return Ok(());
    }
    let (namespace, name) = match process.map(pc_eventd_events::event::split_process) {
        Some((namespace, name)) => (namespace, Some(name)),
        None => (None, None),
    };
    let subject = nats.subjects().filter(source, namespace, name, None);
    let mut messages = consumer.messages(subject, Start::All).await?.stream;
    loop {
        let message = tokio::select! {
            () = &mut stop => return Ok(()),
            message = messages.next() => message,
        };
        let Some(message) = message else {
            return Ok(());
        };
        // A failed pull while NATS is away; the ordered consumer recreates itself.
        let Ok(message) = message else {
            continue;
        };
        let Ok(event) = serde_json::from_slice::<RemediationEvent>(&message.payload) else {
            continue;
        };
        // A plain subject does not say its source.
        if source.is_some_and(|source| source != event.source) {
            continue;
        }
        let line = match output {
            Output::Json => String::from_utf8_lossy(&message.payload).into_owned(),
            Output::Text { styled, .. } => {
                styled_line(&event.timestamp, event.severity, &event.summary(), styled)
            }
        };
        if !write_line(out, &line)? {
            return Ok(());
        }
    }
}

/// Prints one event; `false` once `out` is a closed pipe.
fn print(
    out: &mut (dyn Write + Send),
    output: Output,
    delivery: &Delivery,
) -> Result<bool, WatchError> {
    let line = match output {
        Output::Text {
            styled,
            crash_output: false,
        } => format_line(&delivery.event, styled),
        Output::Text {
            styled,
            crash_output: true,
        } => format_with_output(&delivery.event, styled),
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
        Output::Text { styled, .. } => styled_line(
            &marker.timestamp,
            marker.severity,
            &marker.to_string(),
            styled,
        ),
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

    #[test]
    fn a_crash_shows_its_output_under_it_on_request() {
        let mut event = crashed();
        assert_eq!(
            format_with_output(&event, false),
            format_line(&event, false)
        );
        event.output = Some(pc_eventd_events::event::ProcessOutput {
            lines: vec!["panic: boom".into(), "exit".into()],
            truncated: true,
            redacted: 0,
            unavailable: None,
        });
        assert_eq!(
            format_with_output(&event, false),
            "09:53:31.123 ERROR jobs/crasher crashed (exit=3)\n  │ …\n  │ panic: boom\n  │ exit"
        );
        event.output = Some(pc_eventd_events::event::ProcessOutput {
            unavailable: Some("the output was not read within 500ms".into()),
            ..Default::default()
        });
        assert_eq!(
            format_with_output(&event, false),
            "09:53:31.123 ERROR jobs/crasher crashed (exit=3)\n  │ (no output: the output was not read within 500ms)"
        );
        event.severity = Severity::Critical;
        assert!(format_line(&event, false).contains(" CRIT "));
    }
}
