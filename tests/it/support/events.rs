//! Reads what actually reached JetStream: every message of the stream, in stream order.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use pc_eventd_events::event::{EventType, EventsLost, LOSS_NAMESPACE, LifecycleEvent};

/// One stored message.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: LifecycleEvent,
    pub subject: String,
    pub msg_id: Option<String>,
}

/// How many of `received` are `event_type` events, of `process` only if given.
pub fn count(received: &[Received], process: Option<&str>, event_type: EventType) -> usize {
    received
        .iter()
        .filter(|r| r.event.event_type == event_type)
        .filter(|r| process.is_none_or(|p| r.event.process == p))
        .count()
}

/// One row of the reliability table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reliability {
    /// Distinct expected events in the stream.
    pub delivered: usize,
    /// Expected events stored more than once.
    pub duplicates: usize,
    /// Expected events missing.
    pub lost: usize,
    /// What the loss markers in the stream announced.
    pub marked_lost: u64,
}

impl Reliability {
    /// All `expected` events delivered once, nothing lost, nothing announced lost.
    pub fn exact(expected: usize) -> Self {
        Self {
            delivered: expected,
            duplicates: 0,
            lost: 0,
            marked_lost: 0,
        }
    }
}

pub struct EventLog {
    js: jetstream::Context,
    stream: String,
    messages: consumer::pull::Ordered,
    /// The stream sequence of the last message read.
    position: u64,
    pub received: Vec<Received>,
    /// Loss markers, kept apart from the lifecycle events.
    pub losses: Vec<EventsLost>,
}

impl EventLog {
    /// Opens stream `PROCESS_EVENTS` from the start, waiting up to 30 s for it to be readable.
    pub async fn open(nats_url: &str) -> Self {
        Self::open_stream(nats_url, "PROCESS_EVENTS").await
    }

    pub async fn open_stream(nats_url: &str, name: &str) -> Self {
        Self::open_within(nats_url, name, Duration::from_secs(30)).await
    }

    /// Like [`EventLog::open_stream`], waiting up to `patience` (a cluster electing leaders).
    pub async fn open_within(nats_url: &str, name: &str, patience: Duration) -> Self {
        let js = super::jetstream_at(nats_url).await;
        // The stream may not exist yet (the daemon creates it), and in a cluster that just lost
        // a node the consumer may not be placed until a new leader is elected: retry both.
        let what = format!("read stream {name}");
        let messages = super::retry_until_ok(patience, &what, || async {
            let stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        })
        .await;
        Self {
            js,
            stream: name.to_owned(),
            messages,
            position: 0,
            received: Vec::new(),
            losses: Vec::new(),
        }
    }

    /// Reads until `condition` holds over everything received so far, or panics after
    /// `timeout` listing what did arrive.
    pub async fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&[Received]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition(&self.received) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; received:\n{}",
                self.dump()
            );
            self.read_one(left).await;
        }
    }

    /// Waits for the first `event_type` event of `process` and returns it.
    pub async fn wait_for(&mut self, process: &str, event_type: EventType) -> LifecycleEvent {
        let what = format!("{process} {event_type}");
        self.wait_until(&what, Duration::from_secs(20), |r| {
            r.iter()
                .any(|r| r.event.process == process && r.event.event_type == event_type)
        })
        .await;
        self.of(process, event_type)[0].clone()
    }

    /// Waits for the first loss marker and returns it.
    pub async fn wait_for_loss(&mut self, timeout: Duration) -> EventsLost {
        let deadline = Instant::now() + timeout;
        while self.losses.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for a loss marker; received:
{}",
                self.dump()
            );
            self.read_one(left).await;
        }
        self.losses[0].clone()
    }

    /// Reads everything the stream holds now, up to its last sequence. Call it once whatever
    /// could still publish has stopped (a stopped daemon has drained its outbox): then the log
    /// holds all there will ever be, and an event missing from it is proven absent.
    pub async fn read_to_end(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let last = loop {
            let info = async {
                let mut stream = self.js.get_stream(&self.stream).await.ok()?;
                stream
                    .info()
                    .await
                    .ok()
                    .map(|info| info.state.last_sequence)
            };
            match info.await {
                Some(last) => break last,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => panic!("cannot read the state of stream {}", self.stream),
            }
        };
        while self.position < last {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                self.read_one(left).await,
                "stream {} holds up to {last}, read up to {}",
                self.stream,
                self.position
            );
        }
    }

    /// Reads one message if one arrives within `within`; returns whether one did.
    async fn read_one(&mut self, within: Duration) -> bool {
        let Ok(Some(message)) = tokio::time::timeout(within, self.messages.next()).await else {
            return false;
        };
        let message = message.expect("stream message");
        self.position = message.info().expect("a JetStream message").stream_sequence;
        if message.subject.split('.').nth(2) == Some(LOSS_NAMESPACE) {
            let marker = serde_json::from_slice(&message.payload)
                .unwrap_or_else(|e| panic!("undecodable marker {:?}: {e}", message.payload));
            self.losses.push(marker);
            return true;
        }
        let event = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("undecodable event {:?}: {e}", message.payload));
        self.received.push(Received {
            event,
            subject: message.subject.to_string(),
            msg_id: message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string()),
        });
        true
    }

    /// Every received event of `process` with `event_type`.
    pub fn of(&self, process: &str, event_type: EventType) -> Vec<LifecycleEvent> {
        self.received
            .iter()
            .filter(|r| r.event.process == process && r.event.event_type == event_type)
            .map(|r| r.event.clone())
            .collect()
    }

    /// Prints one row of the reliability table (`scripts/reliability.sh` collects them) and
    /// returns it for the test to assert: of the `expected` events that `counted` selects, how
    /// many the stream holds, how many it holds twice (by id) and how many it lacks.
    pub fn report(
        &self,
        scenario: &str,
        expected: usize,
        counted: impl Fn(&LifecycleEvent) -> bool,
    ) -> Reliability {
        let stored: Vec<&String> = self
            .received
            .iter()
            .filter(|r| counted(&r.event))
            .map(|r| &r.event.id)
            .collect();
        let delivered: std::collections::HashSet<_> = stored.iter().collect();
        let duplicates = stored.len() - delivered.len();
        let lost = expected.saturating_sub(delivered.len());
        // libtest names the thread that runs a test after the test.
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        let row = Reliability {
            delivered: delivered.len(),
            duplicates,
            lost,
            marked_lost: self.losses.iter().map(|l| l.lost).sum(),
        };
        println!(
            "RELIABILITY\t{test}\t{scenario}\t{expected}\t{}\t{duplicates}\t{lost}\t{}",
            row.delivered, row.marked_lost
        );
        row
    }

    pub fn dump(&self) -> String {
        self.received
            .iter()
            .map(|r| format!("  {} {}", r.subject, r.event.summary()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
