//! One page's live feed: server-sent events from the two streams, resumable by `Last-Event-ID`.
//!
//! A page opened fresh gets the current state first (`snapshot`: the last event the daemons
//! keep of every process they track, the newest event of each type of every process the
//! stream still holds, and its newest pressure event of each resource), then the last `backlog` events and the loss markers among
//! them, then `live`, then every new event as it is published. Every event frame carries the id
//! `L:R`: the lifecycle and remediation stream sequences read so far. The browser sends the
//! last id back when it reconnects, and the feed goes on from exactly there: nothing is missed
//! and nothing is sent twice, whether the page lost the server or the server lost NATS.
//!
//! While NATS is away the feed says so (`nats` frames, from the client's connection state) and
//! opens its subscriptions again from its position once NATS is back.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use pc_eventd_events::consumer::{
    Consumer, ConsumerError, Delivery, EventStream, Filter, Messages, Received, Start,
};
use pc_eventd_events::event::{EventType, EventsLost, Resource};
use pc_eventd_events::remediation::RemediationEvent;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often the feed looks at the connection to NATS and retries a lost subscription.
const TICK: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing an idle feed, and notices a page that
/// went away.
const KEEPALIVE_TICKS: u32 = 15;

/// Where a page is in the two streams: the last stream sequence it has of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    pub lifecycle: u64,
    pub remediation: u64,
}

impl Position {
    /// Reads an event id, `L:R` (as [`Position::id`] writes it).
    pub fn parse(id: &str) -> Option<Self> {
        let (lifecycle, remediation) = id.trim().split_once(':')?;
        Some(Self {
            lifecycle: lifecycle.parse().ok()?,
            remediation: remediation.parse().ok()?,
        })
    }

    /// The event id for frames sent from here.
    pub fn id(self) -> String {
        format!("{}:{}", self.lifecycle, self.remediation)
    }
}

/// One server-sent event: `event: name`, the id if any, and `data` over as many `data:` lines as
/// it has lines.
pub(crate) fn frame(name: &str, id: Option<Position>, data: &str) -> String {
    let mut text = format!("event: {name}\n");
    if let Some(position) = id {
        text.push_str(&format!("id: {}\n", position.id()));
    }
    for line in data.split('\n') {
        text.push_str("data: ");
        text.push_str(line.strip_suffix('\r').unwrap_or(line));
        text.push('\n');
    }
    text.push('\n');
    text
}

/// A stored message as the page gets it: its stream sequence, the library's one line for
/// people, and the message as published.
#[derive(Serialize)]
struct Stored<'a> {
    seq: u64,
    summary: &'a str,
    event: &'a RawValue,
}

/// The frame for something read from the lifecycle stream, at `position`.
fn lifecycle_frame(received: &Received, position: Position) -> String {
    match received {
        Received::Event(delivery) => {
            let summary = delivery.event.summary();
            let data = stored(delivery.stream_sequence, &summary, &delivery.payload);
            frame("lifecycle", Some(position), &data)
        }
        Received::EventsLost(marker) => frame("lost", Some(position), &lost_json(marker)),
    }
}

/// `{"summary": …, "marker": …}`.
fn lost_json(marker: &EventsLost) -> String {
    serde_json::json!({ "summary": marker.to_string(), "marker": marker }).to_string()
}

/// `{"seq": …, "summary": …, "event": …}` with the payload as it was published (it is JSON:
/// the library decoded it, or the remediation feed did).
fn stored(seq: u64, summary: &str, payload: &[u8]) -> String {
    let raw = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_owned()).ok());
    match raw {
        Some(event) => serde_json::to_string(&Stored {
            seq,
            summary,
            event: &event,
        })
        .expect("serializes"),
        None => serde_json::json!({ "seq": seq, "summary": summary, "event": null }).to_string(),
    }
}

/// The two streams a page reads, and how much history a fresh page gets.
pub(crate) struct Streams {
    pub lifecycle: Consumer,
    pub remediation: Consumer,
    /// The remediation subjects of the sources shown.
    pub remediation_subject: String,
    /// Which lifecycle events are shown: every event, or one source's (`dashboard.source`).
    pub filter: Filter,
    pub backlog: u64,
}

/// Why a feed ended early: the page went away.
struct PageGone;

/// What a feed sends through; fails once the page went away.
struct Page(mpsc::Sender<Bytes>);

impl Page {
    async fn send(&self, text: String) -> Result<(), PageGone> {
        self.0.send(Bytes::from(text)).await.map_err(|_| PageGone)
    }
}

/// Runs one page's feed into `out` until the page goes away or `stop` is cancelled. `resume` is
/// the page's `Last-Event-ID`, if it had one.
pub(crate) async fn run(
    streams: &Streams,
    resume: Option<Position>,
    out: mpsc::Sender<Bytes>,
    stop: CancellationToken,
) {
    let page = Page(out);
    let fed = tokio::select! {
        () = stop.cancelled() => return,
        fed = feed(streams, resume, &page) => fed,
    };
    if fed.is_err() {
        debug!("dashboard: a page went away");
    }
}

async fn feed(streams: &Streams, resume: Option<Position>, page: &Page) -> Result<(), PageGone> {
    // Before anything else, so that a page that reconnects learns of an outage at once.
    let connected = streams.lifecycle.is_connected();
    page.send(nats_frame(connected)).await?;
    let position = match resume {
        Some(position) => position,
        None => open_fresh(streams, page).await?,
    };
    let mut feed = Feed {
        streams,
        page,
        position,
        lifecycle: None,
        remediation: None,
        connected,
        said_live: resume.is_some(),
        idle_ticks: 0,
    };
    let mut ticks = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = ticks.tick() => feed.tick().await?,
            next = next_lifecycle(&mut feed.lifecycle) => feed.on_lifecycle(next).await?,
            next = next_remediation(&mut feed.remediation, &streams.filter) => feed.on_remediation(next).await?,
        }
    }
}

/// One page's feed once it is open: where it is, and its subscriptions while NATS has them.
struct Feed<'a> {
    streams: &'a Streams,
    page: &'a Page,
    position: Position,
    lifecycle: Option<EventStream>,
    remediation: Option<Messages>,
    /// Whether NATS was reachable at the last look, as the page was told.
    connected: bool,
    said_live: bool,
    idle_ticks: u32,
}

impl Feed<'_> {
    /// Tells a change of the connection, opens what subscription is missing (from the
    /// position), says when the backlog is over, and keeps the connection alive.
    async fn tick(&mut self) -> Result<(), PageGone> {
        let connected = self.streams.lifecycle.is_connected();
        if connected != self.connected {
            self.connected = connected;
            self.page.send(nats_frame(connected)).await?;
        }
        if self.lifecycle.is_none() {
            self.lifecycle =
                subscribe_lifecycle(self.streams, &mut self.position, self.page).await?;
        }
        if self.remediation.is_none() {
            self.remediation = subscribe_remediation(self.streams, self.position).await;
        }
        if self.lifecycle.is_some() && !self.said_live {
            self.said_live = true;
            self.page.send(frame("live", None, "{}")).await?;
        }
        self.idle_ticks += 1;
        if self.idle_ticks >= KEEPALIVE_TICKS {
            self.idle_ticks = 0;
            self.page.send(": keepalive\n\n".to_owned()).await?;
        }
        Ok(())
    }

    async fn on_lifecycle(
        &mut self,
        next: Result<Received, ConsumerError>,
    ) -> Result<(), PageGone> {
        match next {
            Ok(received) => {
                if let Some(events) = &self.lifecycle {
                    self.position.lifecycle = events.position();
                }
                self.page
                    .send(lifecycle_frame(&received, self.position))
                    .await
            }
            // Opened again from the position at the next tick.
            Err(err) => {
                debug!(error = %err, "dashboard: the lifecycle subscription ended");
                self.lifecycle = None;
                Ok(())
            }
        }
    }

    async fn on_remediation(
        &mut self,
        next: Option<(u64, Option<String>)>,
    ) -> Result<(), PageGone> {
        let Some((seq, text)) = next else {
            self.remediation = None;
            return Ok(());
        };
        self.position.remediation = seq;
        match text {
            Some(text) => {
                let frame = frame("remediation", Some(self.position), &text);
                self.page.send(frame).await
            }
            None => Ok(()),
        }
    }
}

/// A fresh page's start: the current state, then the position the backlog starts after.
async fn open_fresh(streams: &Streams, page: &Page) -> Result<Position, PageGone> {
    let snapshot = match current_state(&streams.lifecycle, &streams.filter).await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            warn!(error = %err, "dashboard: cannot read the current state; the page starts empty");
            String::from("[]")
        }
    };
    page.send(frame("snapshot", None, &snapshot)).await?;
    let top = |sequence: Result<u64, ConsumerError>| {
        sequence.unwrap_or(0).saturating_sub(streams.backlog)
    };
    Ok(Position {
        lifecycle: top(streams.lifecycle.last_sequence().await),
        remediation: top(streams.remediation.last_sequence().await),
    })
}

/// What every process looks like now, as a JSON array of stored events, in the order to apply
/// them: first the last event the daemons keep of each process they track (with sequence 0:
/// anything from the stream is newer), so that a process quiet for longer than the stream's
/// retention is there too; then the newest event of each type of every process the stream
/// holds, and its newest pressure event of each resource, in stream order, so that the page
/// knows each one's last crash, start or restart, whether it gave up, is silent or is under
/// pressure.
async fn current_state(lifecycle: &Consumer, shown: &Filter) -> Result<String, ConsumerError> {
    let kept = match lifecycle.last_events().await {
        Ok(mut kept) => {
            kept.retain(|event| shown.shows_source(&event.source));
            kept
        }
        Err(err) => {
            warn!(error = %err, "dashboard: cannot read the daemons' state; quiet processes are left out");
            Vec::new()
        }
    };
    let mut last = lifecycle.subscribe(shown, Start::LastPerSubject).await?;
    let mut deliveries: Vec<_> = last
        .history()
        .await?
        .into_iter()
        .filter_map(Received::into_event)
        .collect();
    deliveries.extend(pressure_episodes(lifecycle, shown).await);
    deliveries.sort_by_key(|delivery| delivery.stream_sequence);
    deliveries.dedup_by_key(|delivery| delivery.stream_sequence);
    let kept = kept.iter().map(|event| {
        let payload = serde_json::to_vec(event).expect("an event serializes");
        stored(0, &event.summary(), &payload)
    });
    let recent = deliveries.iter().map(|delivery| {
        let summary = delivery.event.summary();
        stored(delivery.stream_sequence, &summary, &delivery.payload)
    });
    let stored: Vec<String> = kept.chain(recent).collect();
    Ok(format!("[{}]", stored.join(",")))
}

/// The newest `resource_pressure` or `resource_recovered` of each resource of every process the
/// stream holds. The newest event per subject is one per type, and the newest
/// `resource_recovered` may be about the other resource than the newest `resource_pressure`:
/// with these the page knows of each resource whether it is still under pressure. Empty (and
/// the page may be wrong about a pressure) when they cannot be read.
async fn pressure_episodes(lifecycle: &Consumer, shown: &Filter) -> Vec<Delivery> {
    let filter = shown
        .clone()
        .with_type(EventType::ResourcePressure)
        .with_type(EventType::ResourceRecovered);
    let read = async {
        let mut events = lifecycle.subscribe(&filter, Start::All).await?;
        events.history().await
    };
    match read.await {
        Ok(history) => last_per_resource(history.into_iter().filter_map(Received::into_event)),
        Err(err) => {
            warn!(error = %err, "dashboard: cannot read the pressure episodes; a page may miss one");
            Vec::new()
        }
    }
}

/// The newest of `deliveries` that carry a pressure, per source, process and resource.
fn last_per_resource(deliveries: impl IntoIterator<Item = Delivery>) -> Vec<Delivery> {
    let mut newest: HashMap<(String, String, String, Resource), Delivery> = HashMap::new();
    for delivery in deliveries {
        let Some(pressure) = &delivery.event.pressure else {
            continue;
        };
        let event = &delivery.event;
        let key = (
            event.source.clone(),
            event.namespace.clone(),
            event.process.clone(),
            pressure.resource,
        );
        match newest.get(&key) {
            Some(kept) if kept.stream_sequence > delivery.stream_sequence => {}
            _ => {
                newest.insert(key, delivery);
            }
        }
    }
    newest.into_values().collect()
}

/// Opens the lifecycle subscription after `position` and sends what it holds so far in one
/// write (a fresh page's backlog can be thousands of events). `None` while NATS is away.
async fn subscribe_lifecycle(
    streams: &Streams,
    position: &mut Position,
    page: &Page,
) -> Result<Option<EventStream>, PageGone> {
    let start = Start::Sequence(position.lifecycle + 1);
    let opened = streams.lifecycle.subscribe(&streams.filter, start).await;
    let mut events = match opened {
        Ok(events) => events,
        Err(err) => {
            debug!(error = %err, "dashboard: cannot subscribe to lifecycle events yet");
            return Ok(None);
        }
    };
    let history = match events.history().await {
        Ok(history) => history,
        Err(err) => {
            debug!(error = %err, "dashboard: reading the backlog failed");
            return Ok(None);
        }
    };
    let mut batch = String::new();
    for received in &history {
        if let Received::Event(delivery) = received {
            position.lifecycle = delivery.stream_sequence;
        }
        batch.push_str(&lifecycle_frame(received, *position));
    }
    // Messages the filter skipped count too: the next subscription starts after them.
    position.lifecycle = position.lifecycle.max(events.position());
    if !batch.is_empty() {
        page.send(batch).await?;
    }
    Ok(Some(events))
}

/// Opens the remediation subscription after `position`; `None` while there is no stream (no
/// remediator has run) or NATS is away.
async fn subscribe_remediation(streams: &Streams, position: Position) -> Option<Messages> {
    let start = Start::Sequence(position.remediation + 1);
    streams
        .remediation
        .messages(streams.remediation_subject.clone(), start)
        .await
        .map_err(|err| debug!(error = %err, "dashboard: no remediation events yet"))
        .ok()
}

/// The next lifecycle event; pending while there is no subscription.
async fn next_lifecycle(events: &mut Option<EventStream>) -> Result<Received, ConsumerError> {
    match events {
        Some(events) => events
            .next()
            .await
            .unwrap_or(Err(ConsumerError::MessagesEnded)),
        None => std::future::pending().await,
    }
}

/// The next remediation message, as (its sequence, the frame's data unless it is not a
/// remediation event); `None` when the subscription failed. Pending while there is none.
async fn next_remediation(
    messages: &mut Option<Messages>,
    shown: &Filter,
) -> Option<(u64, Option<String>)> {
    let Some(messages) = messages else {
        return std::future::pending().await;
    };
    let message = messages.stream.next().await?.ok()?;
    let seq = message.info().map_or(0, |info| info.stream_sequence);
    let text = match serde_json::from_slice::<RemediationEvent>(&message.payload) {
        // A plain subject does not say its source.
        Ok(event) if !shown.shows_source(&event.source) => None,
        Ok(event) => Some(stored(seq, &event.summary(), &message.payload)),
        Err(err) => {
            warn!(subject = %message.subject, error = %err, "dashboard: skipping a message that is not a remediation event");
            None
        }
    };
    Some((seq, text))
}

fn nats_frame(connected: bool) -> String {
    frame("nats", None, &format!("{{\"connected\":{connected}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_what_it_writes() {
        let position = Position {
            lifecycle: 1234,
            remediation: 7,
        };
        assert_eq!(position.id(), "1234:7");
        assert_eq!(Position::parse("1234:7"), Some(position));
        assert_eq!(Position::parse(" 0:0 "), Some(Position::default()));
        for bad in ["", "12", "a:1", "1:b", "1:2:3", "-1:2"] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_frame_spreads_lines_over_data_fields() {
        let position = Position {
            lifecycle: 3,
            remediation: 1,
        };
        assert_eq!(
            frame("lifecycle", Some(position), "{\"a\":\n1}"),
            "event: lifecycle\nid: 3:1\ndata: {\"a\":\ndata: 1}\n\n"
        );
        assert_eq!(frame("live", None, "{}"), "event: live\ndata: {}\n\n");
    }

    #[test]
    fn events_loss_markers_and_the_connection_have_frames_of_their_own() {
        use pc_eventd_events::consumer::Delivery;
        use pc_eventd_events::event::{SubjectScheme, example_event};
        let position = Position {
            lifecycle: 7,
            remediation: 2,
        };
        let event = example_event();
        let payload = serde_json::to_vec(&event).unwrap();
        let delivery = Received::Event(Box::new(Delivery {
            event: event.clone(),
            payload: payload.clone().into(),
            stream_sequence: 7,
        }));
        let expected = frame(
            "lifecycle",
            Some(position),
            &stored(7, &event.summary(), &payload),
        );
        assert_eq!(lifecycle_frame(&delivery, position), expected);

        let now = std::time::SystemTime::now();
        let marker = EventsLost::new(&SubjectScheme::default(), "web-01", 412, now, now);
        let text = lifecycle_frame(&Received::EventsLost(marker.clone()), position);
        assert!(text.starts_with("event: lost\nid: 7:2\ndata: "), "{text}");
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["summary"], marker.to_string());
        assert_eq!(data["marker"]["lost"], 412);

        assert_eq!(
            nats_frame(false),
            "event: nats\ndata: {\"connected\":false}\n\n"
        );
        assert_eq!(
            nats_frame(true),
            "event: nats\ndata: {\"connected\":true}\n\n"
        );
    }

    #[test]
    fn the_newest_pressure_event_of_each_resource_is_kept() {
        use pc_eventd_events::event::{Pressure, example_event};
        let delivery = |seq: u64, event_type, process: &str, resource: Option<Resource>| {
            let mut event = example_event();
            event.event_type = event_type;
            event.process = process.into();
            event.pressure = resource.map(|resource| Pressure {
                resource,
                value: 1.0,
                threshold: 2.0,
                for_seconds: 3,
            });
            Delivery {
                payload: serde_json::to_vec(&event).unwrap().into(),
                event,
                stream_sequence: seq,
            }
        };
        let (pressure, recovered) = (EventType::ResourcePressure, EventType::ResourceRecovered);
        let (memory, cpu) = (Some(Resource::Memory), Some(Resource::Cpu));
        // web: memory up, memory down, cpu down: the newest per type says nothing of memory.
        let all = vec![
            delivery(1, pressure, "web", cpu),
            delivery(2, pressure, "web", memory),
            delivery(3, recovered, "web", memory),
            delivery(4, recovered, "web", cpu),
            delivery(5, pressure, "db", memory),
            delivery(6, EventType::Started, "db", None),
        ];
        let mut kept: Vec<(u64, String)> = last_per_resource(all)
            .into_iter()
            .map(|d| (d.stream_sequence, d.event.process))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [(3, "web".into()), (4, "web".into()), (5, "db".into())]
        );
        // Out of order too; another source is another process.
        let mut other = delivery(7, pressure, "web", memory);
        other.event.source = "web-02".into();
        let kept = last_per_resource(vec![
            delivery(3, recovered, "web", memory),
            delivery(2, pressure, "web", memory),
            other,
        ]);
        let mut seqs: Vec<u64> = kept.iter().map(|d| d.stream_sequence).collect();
        seqs.sort();
        assert_eq!(seqs, [3, 7]);
    }

    #[test]
    fn a_stored_event_keeps_the_payload_as_published() {
        assert_eq!(
            stored(9, "a/b crashed", br#"{"id":"x", "type":"crashed"}"#),
            r#"{"seq":9,"summary":"a/b crashed","event":{"id":"x", "type":"crashed"}}"#
        );
        assert_eq!(
            stored(9, "s", b"not json"),
            r#"{"event":null,"seq":9,"summary":"s"}"#
        );
    }
}
