//! Consuming lifecycle events: the library side of what `pc-eventd run` publishes.
//!
//! Usable without the daemon: connect to the NATS servers that hold the stream, say which events
//! you want with a [`Filter`] (by type, by process as `name` or `namespace/name`, by namespace,
//! by severity, or any mix), and read them back as the same [`LifecycleEvent`] the daemon
//! published. Two ways to read:
//!
//! - [`Consumer::subscribe`]: an ephemeral, ordered tail ([`EventStream`]), starting from new
//!   events, a point in time, a stream sequence, the whole stream, or the last event of every
//!   subject ([`Start`]).
//!   Nothing is acknowledged and nothing is kept on the server once the stream is dropped.
//! - [`Consumer::run_durable`]: a named consumer whose position lives on the server, with
//!   explicit acks for at-least-once handling. An event is acknowledged once the handler returns
//!   `Ok`; an `Err` asks for redelivery after a backoff; an event still failing at its last
//!   allowed delivery is *parked*: terminated on the server (never redelivered), logged at warn,
//!   counted in the [`DurableReport`] and, when [`Durable::park_subject`] is set, republished
//!   there with the reason in headers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pc_eventd_events::consumer::ConsumerError> {
//! use futures::StreamExt;
//! use pc_eventd_events::consumer::{Consumer, Filter, Received, Start};
//! use pc_eventd_events::event::EventType;
//!
//! let consumer = Consumer::connect_url("nats://127.0.0.1:4222").await?;
//! let filter = Filter::default().with_type(EventType::Crashed);
//! let mut events = consumer.subscribe(&filter, Start::New).await?;
//! while let Some(received) = events.next().await {
//!     match received? {
//!         Received::Event(delivery) => println!("{}", delivery.event.summary()),
//!         // The daemon had to drop events: the record has a gap here.
//!         Received::EventsLost(marker) => eprintln!("{marker}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A filter with several event types becomes several filter subjects on one consumer, which
//! needs nats-server 2.10 or later: 2.9 silently ignores them and would deliver everything, so
//! [`ConsumerError::MultipleFiltersUnsupported`] is returned there instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind, consumer};
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};

use crate::event::{EventType, EventsLost, LifecycleEvent, Severity, SubjectScheme};
use crate::nats::NatsConfig;

/// Which events to read. Everything unset matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events from this source (the daemon's `process_compose.source`). Selected by the
    /// server in the by-source subject layout; in the plain layout the subscription reads the
    /// other filters' subjects and drops other sources' events itself.
    pub source: Option<String>,
    /// `name` (in any namespace) or `namespace/name`.
    pub process: Option<String>,
    /// Only events from this namespace; must agree with a namespace named in `process`.
    pub namespace: Option<String>,
    /// Only these types; empty means every type.
    pub types: Vec<EventType>,
    /// Events below this severity are left out, unless their type is in `types`.
    pub min_severity: Option<Severity>,
}

/// A filter that cannot be turned into subjects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The process filter is `namespace/name` with another namespace than the namespace filter,
    /// so no event could match both.
    #[error(
        "process {process} names namespace {process_ns} but the namespace filter is {namespace}"
    )]
    NamespaceConflict {
        /// The process filter as given.
        process: String,
        /// The namespace it names.
        process_ns: String,
        /// The namespace filter.
        namespace: String,
    },
    /// The process filter is set but empty; leave it `None` to match every process.
    #[error("the process filter must not be empty")]
    EmptyProcess,
}

impl Filter {
    /// Also (or only) events of `event_type`.
    pub fn with_type(mut self, event_type: EventType) -> Self {
        self.types.push(event_type);
        self
    }

    /// Only events of `process`: `name` in any namespace, or `namespace/name`.
    pub fn with_process(mut self, process: impl Into<String>) -> Self {
        self.process = Some(process.into());
        self
    }

    /// Only events from `source`.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Only events from `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The subjects that select these events on the server, in the shape the daemon publishes
    /// (`{prefix}[.{source}].{namespace}.{name}.{type}`) with `*` for what is not filtered: one
    /// subject per requested type, or one for all types.
    pub fn subjects(&self, scheme: &SubjectScheme) -> Result<Vec<String>, FilterError> {
        let (mut namespace, name) = match self.process.as_deref() {
            Some("") => return Err(FilterError::EmptyProcess),
            Some(process) => {
                let (namespace, name) = crate::event::split_process(process);
                (namespace, Some(name))
            }
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
        let source = self.source.as_deref();
        if self.types.is_empty() {
            return Ok(vec![scheme.filter(source, namespace, name, None)]);
        }
        let mut types = self.types.clone();
        types.sort();
        types.dedup();
        Ok(types
            .into_iter()
            .map(|t| scheme.filter(source, namespace, name, Some(t)))
            .collect())
    }

    /// Whether an event that matched the subjects is from the source asked for (which a plain
    /// subject does not say) and passes the severity threshold.
    pub fn shows(&self, event: &LifecycleEvent) -> bool {
        self.shows_source(&event.source)
            && (self.types.contains(&event.event_type)
                || self.min_severity.is_none_or(|min| event.severity >= min))
    }

    /// Whether a message of `source` (an event or a loss marker) is from the source asked for.
    pub fn shows_source(&self, source: &str) -> bool {
        self.source.as_deref().is_none_or(|wanted| wanted == source)
    }
}

/// Where an ephemeral subscription (or a durable consumer created for the first time) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Only events published from now on.
    #[default]
    New,
    /// Events stored since this time (as the server stamped them), then new ones.
    Since(SystemTime),
    /// Everything the stream still holds, then new ones.
    All,
    /// The last stored event of every matching subject, then new ones. Subjects are per process
    /// *and type*, so this is up to one event per (process, type): see [`latest_per_process`].
    /// With a source filter in the plain layout, where hosts share subjects and the last event
    /// of one may be another host's, every event of the matching subjects is read instead (the
    /// filter keeps the source's): [`latest_per_process`] still picks the newest.
    LastPerSubject,
    /// Events from this stream sequence on. To resume after a [`Delivery`], start at its
    /// `stream_sequence + 1`: nothing is missed and nothing is read twice.
    Sequence(u64),
}

impl Start {
    /// The JetStream deliver policy that starts here.
    pub fn deliver_policy(self) -> consumer::DeliverPolicy {
        match self {
            Self::New => consumer::DeliverPolicy::New,
            Self::All => consumer::DeliverPolicy::All,
            Self::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
            Self::Sequence(start_sequence) => {
                consumer::DeliverPolicy::ByStartSequence { start_sequence }
            }
            Self::Since(at) => {
                // A time before 1970 means "everything"; the server takes nanoseconds.
                let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
                match async_nats::datetime::from_nanos(nanos as i128) {
                    Ok(start_time) => consumer::DeliverPolicy::ByStartTime { start_time },
                    Err(_) => consumer::DeliverPolicy::All,
                }
            }
        }
    }
}

/// Why a [`Consumer`] could not connect, subscribe or read.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The filter cannot be turned into subjects.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The connection to NATS failed, or a NATS setting (such as an unreadable credentials
    /// file) cannot be used.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The `url` setting: the servers tried.
        url: String,
        /// What the NATS client reported.
        source: async_nats::ConnectError,
    },
    /// The stream named here does not exist: the daemon has not created it yet, or it uses
    /// another `nats.stream.name`. [`Consumer::wait_for_stream`] waits for it.
    #[error("stream {0} does not exist (yet): is pc-eventd running against this NATS?")]
    NoStream(String),
    /// The stream's information could not be read for another reason than its absence (no
    /// JetStream, no permission, a timeout).
    #[error("cannot read stream {name}: {source}")]
    Stream {
        /// The stream's name.
        name: String,
        /// What JetStream reported.
        source: jetstream::context::GetStreamError,
    },
    /// The consumer could not be created (or updated) on the stream.
    #[error("cannot create consumer on {stream}: {source}")]
    CreateConsumer {
        /// The stream's name.
        stream: String,
        /// What JetStream reported.
        source: jetstream::stream::ConsumerError,
    },
    /// The filter needs several filter subjects (it has several types) and the server ignored
    /// them, as nats-server before 2.10 does: it would have delivered every event. Holds the
    /// subjects. A filter with at most one type works there.
    #[error(
        "the server ignored the filter subjects {0:?}: several filter subjects on one consumer need nats-server 2.10 or later"
    )]
    MultipleFiltersUnsupported(Vec<String>),
    /// Reading messages failed, typically while NATS is away; holds the client's error.
    #[error("cannot read messages: {0}")]
    Messages(#[source] async_nats::Error),
    /// The daemon's state bucket could not be read (it exists).
    #[error("cannot read the state bucket {name}: {source}")]
    StateBucket {
        /// The bucket's name.
        name: String,
        /// What NATS reported.
        source: async_nats::Error,
    },
    /// The server ended a durable consumer's message stream.
    #[error("the message stream ended")]
    MessagesEnded,
    /// The [`Durable`] settings cannot be used (see [`Durable::max_deliver`] and
    /// [`Durable::ack_wait`]).
    #[error("invalid durable consumer {name}: {problem}")]
    InvalidDurable {
        /// The durable consumer's name.
        name: String,
        /// What is wrong, naming the setting.
        problem: &'static str,
    },
}

/// What a subscription receives: an event, or a loss marker where the record has a gap.
#[derive(Debug, Clone)]
pub enum Received {
    /// A lifecycle event (boxed: a delivery is several times the size of a marker).
    Event(Box<Delivery>),
    /// A loss marker: the daemon had to drop events (its outbox was full). The stream goes on.
    EventsLost(EventsLost),
}

impl Received {
    /// The event, or `None` for a loss marker.
    pub fn into_event(self) -> Option<Delivery> {
        match self {
            Self::Event(delivery) => Some(*delivery),
            Self::EventsLost(_) => None,
        }
    }
}

/// Raw messages from [`Consumer::messages`].
pub struct Messages {
    /// How many stored messages matched when it was made: the history, read first.
    pub backlog: u64,
    /// The messages, the history first, then new ones as they come.
    pub stream: consumer::pull::Ordered,
}

/// One event read from the stream.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event, decoded.
    pub event: LifecycleEvent,
    /// The message exactly as published (the event's JSON).
    pub payload: Bytes,
    /// Its position in the stream: later events have higher numbers.
    pub stream_sequence: u64,
}

/// Reads lifecycle events from the daemon's stream.
#[derive(Debug, Clone)]
pub struct Consumer {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: String,
    /// The daemon's bucket of the last state per process.
    state_bucket: String,
    subjects: SubjectScheme,
}

impl Consumer {
    /// Connects with the daemon's NATS settings: servers, authentication, TLS, the stream's name
    /// and the subject prefix.
    pub async fn connect(nats: &NatsConfig) -> Result<Self, ConsumerError> {
        Self::connect_with(nats, async_nats::ConnectOptions::new()).await
    }

    /// Like [`Consumer::connect`], but returns at once and connects in the background, retrying
    /// until NATS answers: for a long-running reader that should start (and say NATS is away,
    /// with [`Consumer::is_connected`]) rather than fail. Until it is connected, reads fail.
    /// Only a setting that cannot be used (an unreadable credentials file) is an error.
    pub async fn connect_in_background(nats: &NatsConfig) -> Result<Self, ConsumerError> {
        let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        Self::connect_with(nats, options).await
    }

    async fn connect_with(
        nats: &NatsConfig,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, ConsumerError> {
        let options = options
            .name("pc-eventd consumer")
            .connection_timeout(nats.connect_timeout);
        let client = nats
            .connect(options)
            .await
            .map_err(|source| ConsumerError::Connect {
                url: nats.url.clone(),
                source,
            })?;
        Ok(Self {
            jetstream: jetstream::new(client.clone()),
            client,
            stream: nats.stream.name.clone(),
            state_bucket: nats.stream.state_bucket(),
            subjects: nats.subjects(),
        })
    }

    /// Connects to `url` (one server, or several separated by commas) with the default stream
    /// and prefix, and no authentication.
    pub async fn connect_url(url: &str) -> Result<Self, ConsumerError> {
        Self::connect(&NatsConfig {
            url: url.to_owned(),
            ..NatsConfig::default()
        })
        .await
    }

    /// Whether the connection to NATS is up right now (the client reconnects on its own).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The subjects `filter` selects under this consumer's prefix.
    pub fn subjects(&self, filter: &Filter) -> Result<Vec<String>, FilterError> {
        filter.subjects(&self.subjects)
    }

    /// Tails the events `filter` selects from `start` on, through an ordered ephemeral consumer
    /// (the client notices gaps and recreates it from where it was). Fails with
    /// [`ConsumerError::NoStream`] if the daemon has not created the stream yet.
    pub async fn subscribe(
        &self,
        filter: &Filter,
        start: Start,
    ) -> Result<EventStream, ConsumerError> {
        let subjects = self.subjects(filter)?;
        let (filter_subject, filter_subjects) = filter_fields(&subjects);
        let start = match start {
            Start::LastPerSubject if filter.source.is_some() && !self.subjects.selects_source() => {
                Start::All
            }
            start => start,
        };
        let config = consumer::pull::OrderedConfig {
            filter_subject,
            filter_subjects,
            deliver_policy: start.deliver_policy(),
            ..Default::default()
        };
        let created = self.create(config, &subjects).await?;
        let backlog = created.cached_info().num_pending;
        let messages = created
            .messages()
            .await
            .map_err(|e| ConsumerError::Messages(e.into()))?;
        Ok(EventStream {
            messages,
            filter: filter.clone(),
            backlog,
            undecodable: 0,
            position: 0,
        })
    }

    /// The raw messages on `subject` in this consumer's stream from `start` on, through an
    /// ordered ephemeral consumer: for a stream of other events than lifecycle events, such as
    /// the remediator's outcomes. Fails with [`ConsumerError::NoStream`] if the stream does not
    /// exist yet.
    pub async fn messages(&self, subject: String, start: Start) -> Result<Messages, ConsumerError> {
        let subjects = [subject];
        let config = consumer::pull::OrderedConfig {
            filter_subject: subjects[0].clone(),
            deliver_policy: start.deliver_policy(),
            ..Default::default()
        };
        let created = self.create(config, &subjects).await?;
        Ok(Messages {
            backlog: created.cached_info().num_pending,
            stream: created
                .messages()
                .await
                .map_err(|e| ConsumerError::Messages(e.into()))?,
        })
    }

    /// Runs the durable consumer `durable` over the events `filter` selects, calling `handler`
    /// for each, one at a time, until `stop` resolves (the event being handled is finished
    /// first). Creates the consumer on the server, or updates its settings.
    ///
    /// Delivery is at least once: an event is acknowledged (and the server has confirmed it)
    /// after `handler` returns `Ok`. On `Err` it is redelivered after the next delay of
    /// [`Durable::backoff`]; at its [`Durable::max_deliver`]th delivery a failing event is
    /// parked instead (see the module docs). Events the filter's severity leaves out are
    /// acknowledged without calling `handler`; messages that are not lifecycle events are
    /// terminated and counted. Events fetched but not handled when `stop` resolves are released
    /// for immediate redelivery.
    pub async fn run_durable<H, F, E>(
        &self,
        durable: &Durable,
        filter: &Filter,
        mut handler: H,
        stop: impl Future<Output = ()>,
    ) -> Result<DurableReport, ConsumerError>
    where
        H: FnMut(LifecycleEvent) -> F,
        F: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        durable.validate()?;
        let mut messages = self.open_durable(durable, filter).await?;
        let mut report = DurableReport::default();
        tokio::pin!(stop);
        loop {
            let message = tokio::select! {
                () = &mut stop => break,
                message = messages.next() => message,
            };
            let Some(message) = durable_message(durable, message)? else {
                continue;
            };
            let outcome = self.settle(durable, filter, &mut handler, &message).await;
            report.count(outcome);
        }
        // Messages already fetched would otherwise wait out ack_wait before redelivery.
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        let _ = self.client.flush().await;
        Ok(report)
    }

    /// Creates (or updates) the durable consumer for `filter` and opens its message stream.
    async fn open_durable(
        &self,
        durable: &Durable,
        filter: &Filter,
    ) -> Result<consumer::pull::Stream, ConsumerError> {
        let subjects = self.subjects(filter)?;
        let (filter_subject, filter_subjects) = filter_fields(&subjects);
        let config = consumer::pull::Config {
            durable_name: Some(durable.name.clone()),
            filter_subject,
            filter_subjects,
            deliver_policy: durable.start.deliver_policy(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: durable.ack_wait,
            max_deliver: durable.max_deliver,
            ..Default::default()
        };
        let created = self.create(config, &subjects).await?;
        // One message fetched at a time: handling is sequential, and whatever waits in a local
        // buffer has its ack_wait running.
        let messages = created
            .stream()
            .max_messages_per_batch(1)
            .messages()
            .await
            .map_err(|e| ConsumerError::Messages(e.into()))?;
        tracing::info!(consumer = %durable.name, subjects = %subjects.join(" "), "durable consumer running");
        Ok(messages)
    }

    /// Handles one message of a durable consumer and says what became of it.
    async fn settle<H, F, E>(
        &self,
        durable: &Durable,
        filter: &Filter,
        handler: &mut H,
        message: &jetstream::Message,
    ) -> Handling
    where
        H: FnMut(LifecycleEvent) -> F,
        F: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let event: LifecycleEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(_) if let Some(marker) = loss_marker(message) => {
                tracing::warn!(consumer = %durable.name, lost = marker.lost, source = %marker.source, "the daemon reported lost events");
                ack(message, AckKind::Ack, &durable.name).await;
                return Handling::Skipped;
            }
            Err(err) => {
                tracing::warn!(consumer = %durable.name, subject = %message.subject, error = %err, "terminating a message that is not a lifecycle event");
                ack(message, AckKind::Term, &durable.name).await;
                return Handling::Undecodable;
            }
        };
        if !filter.shows(&event) {
            ack(message, AckKind::Ack, &durable.name).await;
            return Handling::Skipped;
        }
        let id = event.id.clone();
        match working(message, durable.ack_wait, handler(event)).await {
            Ok(()) => {
                // Confirmed, so a stop right after this cannot hand the event out again.
                if let Err(err) = message.double_ack().await {
                    tracing::warn!(consumer = %durable.name, event = %id, error = %err, "ack not confirmed; the event may be delivered again");
                }
                Handling::Handled
            }
            Err(err) if delivered >= durable.max_deliver => {
                tracing::warn!(consumer = %durable.name, event = %id, subject = %message.subject, deliveries = delivered, error = %err, "parking an event that kept failing");
                self.park(durable, message, delivered, &err.to_string())
                    .await;
                ack(message, AckKind::Term, &durable.name).await;
                Handling::Parked
            }
            Err(err) => {
                let delay = durable.delay(delivered);
                tracing::info!(consumer = %durable.name, event = %id, deliveries = delivered, retry_in = ?delay, error = %err, "handler failed; will retry");
                ack(message, AckKind::Nak(Some(delay)), &durable.name).await;
                Handling::Retried
            }
        }
    }

    /// Republishes a parked message to the park subject, if there is one.
    async fn park(
        &self,
        durable: &Durable,
        message: &jetstream::Message,
        delivered: i64,
        error: &str,
    ) {
        let Some(subject) = &durable.park_subject else {
            return;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Pc-Eventd-Consumer", durable.name.as_str());
        headers.insert("Pc-Eventd-Subject", message.subject.as_str());
        headers.insert("Pc-Eventd-Deliveries", delivered.to_string().as_str());
        // Header values are one line.
        headers.insert("Pc-Eventd-Error", error.replace(['\r', '\n'], " ").as_str());
        let published = self
            .client
            .publish_with_headers(subject.clone(), headers, message.payload.clone())
            .await;
        if let Err(err) = published {
            tracing::warn!(consumer = %durable.name, park_subject = %subject, error = %err, "cannot republish a parked event");
        }
    }

    /// The last event the daemon published of every process it tracks now, on every source that
    /// publishes to this stream, from the daemon's state bucket
    /// ([`StreamConfig::state_bucket`](crate::nats::StreamConfig::state_bucket)), whatever its
    /// age: a process running quietly for longer than the stream keeps events is here, and a
    /// process that is gone is not. Unordered. Empty while no daemon has created the bucket;
    /// records written by a daemon before 0.1 that kept no last event are left out.
    pub async fn last_events(&self) -> Result<Vec<LifecycleEvent>, ConsumerError> {
        #[derive(serde::Deserialize)]
        struct Kept {
            #[serde(default)]
            last_event: Option<LifecycleEvent>,
        }
        let read_error = |source: async_nats::Error| ConsumerError::StateBucket {
            name: self.state_bucket.clone(),
            source,
        };
        // A bucket is a stream of its own: its absence is told apart from other failures.
        match self
            .jetstream
            .get_stream(format!("KV_{}", self.state_bucket))
            .await
        {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => return Ok(Vec::new()),
            Err(err) => return Err(read_error(err.into())),
        }
        let bucket = self
            .jetstream
            .get_key_value(&self.state_bucket)
            .await
            .map_err(|e| read_error(e.into()))?;
        let mut keys = bucket.keys().await.map_err(|e| read_error(e.into()))?;
        let mut events = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| read_error(e.into()))?;
            let Some(value) = bucket.get(&key).await.map_err(|e| read_error(e.into()))? else {
                continue;
            };
            match serde_json::from_slice::<Kept>(&value) {
                Ok(Kept {
                    last_event: Some(event),
                }) => events.push(event),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(%key, error = %err, "skipping a state record that cannot be read");
                }
            }
        }
        Ok(events)
    }

    /// The sequence of the newest message in the stream (0 while it is empty): with
    /// [`Start::Sequence`], a window of the most recent messages (`last - n + 1`).
    pub async fn last_sequence(&self) -> Result<u64, ConsumerError> {
        Ok(self.stream().await?.cached_info().state.last_sequence)
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream, ConsumerError> {
        self.jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|source| {
                if is_not_found(&source) {
                    ConsumerError::NoStream(self.stream.clone())
                } else {
                    ConsumerError::Stream {
                        name: self.stream.clone(),
                        source,
                    }
                }
            })
    }

    /// Waits until the daemon has created the stream (true), or `stop` resolves first (false).
    pub async fn wait_for_stream(
        &self,
        stop: impl Future<Output = ()>,
    ) -> Result<bool, ConsumerError> {
        tokio::pin!(stop);
        let mut said = false;
        loop {
            match self.stream().await {
                Ok(_) => return Ok(true),
                Err(ConsumerError::NoStream(name)) => {
                    if !said {
                        tracing::info!(stream = %name, "waiting for the stream to be created");
                        said = true;
                    }
                }
                Err(err) => return Err(err),
            }
            tokio::select! {
                () = &mut stop => return Ok(false),
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Creates (or updates) a consumer on the stream and checks the server kept its filter.
    async fn create<C>(
        &self,
        config: C,
        subjects: &[String],
    ) -> Result<consumer::Consumer<C>, ConsumerError>
    where
        C: consumer::IntoConsumerConfig + consumer::FromConsumer,
    {
        let created = self
            .stream()
            .await?
            .create_consumer(config)
            .await
            .map_err(|source| ConsumerError::CreateConsumer {
                stream: self.stream.clone(),
                source,
            })?;
        check_filters(subjects, &created.cached_info().config)?;
        Ok(created)
    }
}

/// One subject goes in `filter_subject`, which every server version honours; several need
/// `filter_subjects` (nats-server 2.10+).
fn filter_fields(subjects: &[String]) -> (String, Vec<String>) {
    match subjects {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    }
}

/// nats-server 2.9 drops `filter_subjects` without an error and delivers everything; the
/// consumer it echoes back shows it.
fn check_filters(subjects: &[String], created: &consumer::Config) -> Result<(), ConsumerError> {
    if subjects.len() > 1 && created.filter_subjects.is_empty() && created.filter_subject.is_empty()
    {
        return Err(ConsumerError::MultipleFiltersUnsupported(subjects.to_vec()));
    }
    Ok(())
}

/// Runs `handling`, telling the server every half `ack_wait` that the message is still being
/// worked on, so a slow handler does not get its event handed out a second time.
async fn working<T>(
    message: &jetstream::Message,
    ack_wait: Duration,
    handling: impl Future<Output = T>,
) -> T {
    tokio::pin!(handling);
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + ack_wait / 2, ack_wait / 2);
    loop {
        tokio::select! {
            done = &mut handling => return done,
            _ = progress.tick() => {
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(subject = %message.subject, error = %err, "cannot extend ack_wait");
                }
            }
        }
    }
}

/// What a durable consumer's stream gave: a message; `None` for a failed pull it keeps
/// going after; an error for an end it cannot go on from.
fn durable_message(
    durable: &Durable,
    next: Option<Result<jetstream::Message, consumer::pull::MessagesError>>,
) -> Result<Option<jetstream::Message>, ConsumerError> {
    match next {
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(err)) => match err.kind() {
            consumer::pull::MessagesErrorKind::ConsumerDeleted
            | consumer::pull::MessagesErrorKind::PushBasedConsumer
            | consumer::pull::MessagesErrorKind::RequestLimitExceeded => {
                Err(ConsumerError::Messages(err.into()))
            }
            // Missed heartbeats and failed pulls happen while NATS is away; the stream keeps
            // pulling.
            _ => {
                tracing::warn!(consumer = %durable.name, error = %err, "durable consumer: reading messages");
                Ok(None)
            }
        },
        None => Err(ConsumerError::MessagesEnded),
    }
}

/// The loss marker `message` holds, if it is one (see [`EventsLost`]).
fn loss_marker(message: &async_nats::Message) -> Option<EventsLost> {
    let namespace = message.subject.split('.').rev().nth(2)?;
    if namespace != crate::event::LOSS_NAMESPACE {
        return None;
    }
    serde_json::from_slice(&message.payload).ok()
}

async fn ack(message: &jetstream::Message, kind: AckKind, consumer: &str) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(consumer, subject = %message.subject, error = %err, "cannot send ack");
    }
}

/// An ephemeral subscription: a stream of the events its filter shows.
///
/// Messages that are not lifecycle events are skipped (logged at warn and counted in
/// [`EventStream::undecodable`]); an ephemeral consumer acknowledges nothing, so there is
/// nothing to terminate. An `Err` item is a failed read, typically while NATS is away: the
/// stream goes on, and the ordered consumer recreates itself from the last event it delivered.
pub struct EventStream {
    messages: consumer::pull::Ordered,
    filter: Filter,
    /// How many stored messages the server still had to deliver from the history.
    backlog: u64,
    undecodable: u64,
    /// The stream sequence of the last message read, shown or not.
    position: u64,
}

impl EventStream {
    /// The stream sequence of the last message read so far, whether it was delivered, left out
    /// by the filter or skipped (0 before the first). A reader that stops here resumes with
    /// [`Start::Sequence`]`(position + 1)`: nothing is missed and nothing is read twice, loss
    /// markers included.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Messages skipped so far because they were not lifecycle events.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Reads the history: the stored messages that matched when the subscription was made (by
    /// its [`Start`]), and returns those the filter shows. The stream then goes on with newer
    /// events (with the loss markers among them). Empty for [`Start::New`].
    pub async fn history(&mut self) -> Result<Vec<Received>, ConsumerError> {
        let mut shown = Vec::new();
        while self.backlog > 0 {
            match futures::future::poll_fn(|cx| self.poll_message(cx)).await {
                Some(Ok(Some(received))) => shown.push(received),
                Some(Ok(None)) => {}
                Some(Err(err)) => return Err(err),
                None => break,
            }
        }
        Ok(shown)
    }

    /// The next message: `Some(Ok(None))` for one that is skipped.
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Option<Received>, ConsumerError>>> {
        let message = match ready!(self.messages.poll_next_unpin(cx)) {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                return Poll::Ready(Some(Err(ConsumerError::Messages(err.into()))));
            }
            None => return Poll::Ready(None),
        };
        self.backlog = self.backlog.saturating_sub(1);
        let stream_sequence = message.info().map_or(0, |info| info.stream_sequence);
        self.position = self.position.max(stream_sequence);
        let event: LifecycleEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(_) if let Some(marker) = loss_marker(&message) => {
                let shown = self.filter.shows_source(&marker.source);
                return Poll::Ready(Some(Ok(shown.then_some(Received::EventsLost(marker)))));
            }
            Err(err) => {
                self.undecodable += 1;
                tracing::warn!(subject = %message.subject, error = %err, "skipping a message that is not a lifecycle event");
                return Poll::Ready(Some(Ok(None)));
            }
        };
        if !self.filter.shows(&event) {
            return Poll::Ready(Some(Ok(None)));
        }
        Poll::Ready(Some(Ok(Some(Received::Event(Box::new(Delivery {
            event,
            stream_sequence,
            payload: message.payload.clone(),
        }))))))
    }
}

impl Stream for EventStream {
    type Item = Result<Received, ConsumerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(self.poll_message(cx)) {
                Some(Ok(None)) => continue,
                Some(Ok(Some(received))) => return Poll::Ready(Some(Ok(received))),
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Reduces deliveries to the newest one of each process (by namespace and name), in stream
/// order. [`Start::LastPerSubject`] yields the last event of every *subject*, one per process
/// and type; this makes it the last event of every process.
pub fn latest_per_process(deliveries: Vec<Delivery>) -> Vec<Delivery> {
    let mut newest = std::collections::HashMap::new();
    for delivery in deliveries {
        let key = (
            delivery.event.namespace.clone(),
            delivery.event.process.clone(),
        );
        match newest.get(&key) {
            Some(Delivery {
                stream_sequence, ..
            }) if *stream_sequence > delivery.stream_sequence => {}
            _ => {
                newest.insert(key, delivery);
            }
        }
    }
    let mut latest: Vec<Delivery> = newest.into_values().collect();
    latest.sort_by_key(|d| d.stream_sequence);
    latest
}

/// A durable, named consumer's settings. The name is the consumer's identity on the server: a
/// program started again with the same name goes on where the last one stopped.
#[derive(Debug, Clone)]
pub struct Durable {
    /// The consumer's durable name on the server: its identity, where its position is kept.
    pub name: String,
    /// Where the consumer starts when it is first created (later runs resume).
    pub start: Start,
    /// Deliveries of one event, the first included, before it is parked (at least 1).
    pub max_deliver: i64,
    /// Delay before redelivering an event whose handler failed, by failed attempt; the last
    /// entry repeats.
    pub backoff: Vec<Duration>,
    /// How long the server waits for an ack before it redelivers. A handler may take longer:
    /// while it runs, the consumer tells the server it is still working every half `ack_wait`.
    /// What it bounds is how long an event waits after the consumer dies mid-handler.
    pub ack_wait: Duration,
    /// Core NATS subject to republish parked events on, with headers `Pc-Eventd-Consumer`,
    /// `Pc-Eventd-Subject`, `Pc-Eventd-Deliveries` and `Pc-Eventd-Error`. Put a stream on it
    /// to keep them. `None`: parked events are only logged and counted.
    pub park_subject: Option<String>,
}

impl Durable {
    /// What a durable consumer's name must be, as [`Durable::is_valid_name`] checks it.
    pub const NAME_RULE: &'static str = "must be non-empty, without spaces, `.`, `*` or `>`";

    /// Whether `name` can name a durable consumer (NATS uses it in subjects).
    pub fn is_valid_name(name: &str) -> bool {
        !name.is_empty()
            && !name.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
    }

    /// Defaults: new events only, 5 deliveries with 1s, 5s, 30s, 60s between them, 30s ack
    /// wait, no park subject.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            start: Start::New,
            max_deliver: 5,
            backoff: [1, 5, 30, 60].map(Duration::from_secs).to_vec(),
            ack_wait: Duration::from_secs(30),
            park_subject: None,
        }
    }

    fn validate(&self) -> Result<(), ConsumerError> {
        let problem = if self.max_deliver < 1 {
            "max_deliver must be at least 1: redelivery is bounded"
        } else if self.ack_wait.is_zero() {
            "ack_wait must be more than zero"
        } else {
            return Ok(());
        };
        Err(ConsumerError::InvalidDurable {
            name: self.name.clone(),
            problem,
        })
    }

    /// The delay after the `delivered`th delivery failed.
    fn delay(&self, delivered: i64) -> Duration {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }
}

/// What a [`Consumer::run_durable`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurableReport {
    /// Events the handler accepted (acknowledged).
    pub handled: u64,
    /// Handler failures that were sent back for redelivery.
    pub retried: u64,
    /// Events that failed at their last allowed delivery and were terminated.
    pub parked: u64,
    /// Events below the filter's severity, acknowledged without the handler.
    pub skipped: u64,
    /// Messages that were not lifecycle events, terminated.
    pub undecodable: u64,
}

enum Handling {
    Handled,
    Retried,
    Parked,
    Skipped,
    Undecodable,
}

impl DurableReport {
    fn count(&mut self, outcome: Handling) {
        let counter = match outcome {
            Handling::Handled => &mut self.handled,
            Handling::Retried => &mut self.retried,
            Handling::Parked => &mut self.parked,
            Handling::Skipped => &mut self.skipped,
            Handling::Undecodable => &mut self.undecodable,
        };
        *counter += 1;
    }
}

/// Whether JetStream said the stream does not exist.
pub(crate) fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventState, Severity};

    fn subjects(filter: Filter) -> Vec<String> {
        filter.subjects(&SubjectScheme::default()).unwrap()
    }

    #[test]
    fn no_filter_selects_everything() {
        assert_eq!(subjects(Filter::default()), ["core.process.*.*.*"]);
    }

    #[test]
    fn a_bare_process_name_matches_every_namespace() {
        assert_eq!(
            subjects(Filter::default().with_process("nats")),
            ["core.process.*.nats.*"]
        );
    }

    #[test]
    fn namespace_slash_name_pins_both() {
        assert_eq!(
            subjects(Filter::default().with_process("default/pocketbase")),
            ["core.process.default.pocketbase.*"]
        );
    }

    #[test]
    fn a_type_matches_every_process_and_types_add_up() {
        let filter = Filter::default()
            .with_type(EventType::Unhealthy)
            .with_type(EventType::Crashed)
            .with_type(EventType::Crashed);
        assert_eq!(
            subjects(filter),
            ["core.process.*.*.crashed", "core.process.*.*.unhealthy"]
        );
    }

    #[test]
    fn combined_filters_and_odd_names() {
        let filter = Filter::default()
            .with_process("api.v2")
            .with_namespace("shop")
            .with_type(EventType::Crashed);
        assert_eq!(subjects(filter), ["core.process.shop.api%2Ev2.crashed"]);
    }

    #[test]
    fn a_source_is_selected_by_the_server_only_in_the_by_source_layout() {
        let filter = Filter::default()
            .with_source("web-01")
            .with_process("api")
            .with_type(EventType::Crashed);
        let by_source = SubjectScheme::default().with_layout(crate::event::SubjectLayout::BySource);
        assert_eq!(
            filter.subjects(&by_source).unwrap(),
            ["core.process.web-01.*.api.crashed"]
        );
        assert_eq!(subjects(filter), ["core.process.*.api.crashed"]);
        assert_eq!(
            Filter::default().subjects(&by_source).unwrap(),
            ["core.process.*.*.*.*"]
        );
    }

    #[test]
    fn a_source_filter_drops_other_sources_events_and_markers() {
        let filter = Filter::default().with_source("web-01");
        let mut event = crate::event::example_event();
        event.source = "web-01".into();
        assert!(filter.shows(&event));
        event.source = "web-02".into();
        assert!(!filter.shows(&event));
        assert!(Filter::default().shows(&event));
        assert!(filter.shows_source("web-01"));
        assert!(!filter.shows_source("web-01.eu"));
    }

    #[test]
    fn a_namespace_filter_agrees_with_the_same_namespace_in_the_process() {
        let filter = Filter::default()
            .with_process("shop/api")
            .with_namespace("shop");
        assert_eq!(subjects(filter), ["core.process.shop.api.*"]);
    }

    #[test]
    fn the_severity_threshold_keeps_what_is_at_or_above_it_and_the_types_asked_for() {
        let mut event = crate::event::example_event();
        event.severity = Severity::Warning;
        let at = Filter {
            min_severity: Some(Severity::Warning),
            ..Filter::default()
        };
        assert!(at.shows(&event));
        let above = Filter {
            min_severity: Some(Severity::Error),
            ..Filter::default()
        };
        assert!(!above.shows(&event));
        assert!(above.clone().with_type(event.event_type).shows(&event));
    }

    #[test]
    fn conflicting_namespaces_are_an_error() {
        let filter = Filter::default().with_process("a/web").with_namespace("b");
        assert!(matches!(
            filter.subjects(&SubjectScheme::default()),
            Err(FilterError::NamespaceConflict { .. })
        ));
        let empty = Filter::default().with_process("");
        assert_eq!(
            empty.subjects(&SubjectScheme::default()),
            Err(FilterError::EmptyProcess)
        );
    }

    #[test]
    fn one_subject_uses_the_field_every_server_knows() {
        let one = vec!["a.b".to_owned()];
        assert_eq!(filter_fields(&one), ("a.b".to_owned(), vec![]));
        let two = vec!["a.b".to_owned(), "a.c".to_owned()];
        assert_eq!(filter_fields(&two), (String::new(), two.clone()));
        // what nats-server 2.9 echoes back for a consumer created with two filters
        let ignored = consumer::Config::default();
        assert!(matches!(
            check_filters(&two, &ignored),
            Err(ConsumerError::MultipleFiltersUnsupported(subjects)) if subjects == two
        ));
        assert!(matches!(check_filters(&one, &ignored), Ok(())));
        // nats-server 2.10 and later echo them back
        let kept = consumer::Config {
            filter_subjects: two.clone(),
            ..consumer::Config::default()
        };
        assert!(matches!(check_filters(&two, &kept), Ok(())));
    }

    #[test]
    fn since_becomes_the_servers_start_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_760_608_411_123);
        match Start::Since(at).deliver_policy() {
            consumer::DeliverPolicy::ByStartTime { start_time } => {
                assert_eq!(start_time.unix_timestamp_nanos(), 1_760_608_411_123_000_000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_repeats_its_last_delay() {
        let mut durable = Durable::new("d");
        durable.backoff = vec![Duration::from_millis(10), Duration::from_millis(20)];
        assert_eq!(durable.delay(1), Duration::from_millis(10));
        assert_eq!(durable.delay(2), Duration::from_millis(20));
        assert_eq!(durable.delay(9), Duration::from_millis(20));
        durable.backoff.clear();
        assert_eq!(durable.delay(1), Duration::ZERO);
    }

    #[test]
    fn a_durable_must_bound_its_redeliveries_and_wait_for_acks() {
        let invalid = |durable: &Durable| match durable.validate() {
            Err(ConsumerError::InvalidDurable { name, problem }) => {
                assert_eq!(name, "d");
                problem
            }
            other => panic!("{other:?}"),
        };
        assert!(matches!(Durable::new("d").validate(), Ok(())));
        let mut unbounded = Durable::new("d");
        unbounded.max_deliver = 0;
        assert!(invalid(&unbounded).starts_with("max_deliver"));
        let mut impatient = Durable::new("d");
        impatient.ack_wait = Duration::ZERO;
        assert!(invalid(&impatient).starts_with("ack_wait"));
    }

    fn delivery(namespace: &str, process: &str, event_type: EventType, seq: u64) -> Delivery {
        let event = LifecycleEvent {
            id: format!("{seq}"),
            event_type,
            process: process.into(),
            namespace: namespace.into(),
            timestamp: "2026-11-27T09:53:31.123Z".into(),
            subject: String::new(),
            severity: Severity::Info,
            seq,
            source: "test".into(),
            previous_status: None,
            exit_code: None,
            restarts: None,
            restarts_delta: None,
            reason: None,
            synthetic: false,
            output: None,
            given_up: None,
            pressure: None,
            silence: None,
            state: EventState {
                name: process.into(),
                namespace: namespace.into(),
                namespaces: vec![namespace.into()],
                status: "Running".into(),
                is_ready: "-".into(),
                has_ready_probe: false,
                restarts: 0,
                exit_code: 0,
                is_running: true,
                pid: 1,
            },
        };
        Delivery {
            event,
            payload: Bytes::new(),
            stream_sequence: seq,
        }
    }

    #[test]
    fn last_per_subject_reduces_to_one_event_per_process() {
        // last per subject: one per (process, type), in subject order rather than time order
        let last_per_subject = vec![
            delivery("default", "web", EventType::Started, 3),
            delivery("default", "web", EventType::Crashed, 9),
            delivery("jobs", "web", EventType::Started, 4),
            delivery("default", "db", EventType::Healthy, 7),
            delivery("default", "db", EventType::Started, 2),
        ];
        let latest: Vec<(String, String, EventType)> = latest_per_process(last_per_subject)
            .into_iter()
            .map(|d| (d.event.namespace, d.event.process, d.event.event_type))
            .collect();
        assert_eq!(
            latest,
            [
                ("jobs".into(), "web".into(), EventType::Started),
                ("default".into(), "db".into(), EventType::Healthy),
                ("default".into(), "web".into(), EventType::Crashed),
            ]
        );
    }
}
