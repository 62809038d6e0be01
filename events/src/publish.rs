//! Publishing to NATS JetStream: the stream's settings and acknowledged, deduplicated publishes.
//!
//! [`Message`] is the one shape of a publish (subject, id, payload): the daemon's outbox stores
//! it and its relay sends it through [`Publisher::publish_batch`]; a consumer that publishes
//! events of its own (the remediator) uses the same two.

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, HeaderMap};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::consumer::is_not_found;
use crate::event::{EventsLost, LifecycleEvent, SubjectScheme};
use crate::nats::{NatsConfig, OnMismatch, Storage, StreamConfig};

/// Why a connect, a stream check or a publish failed; each keeps the NATS error it came from.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The NATS connection could not be set up (bad TLS or credential files, a bad URL).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The configured server URL.
        url: String,
        /// What async-nats reported.
        source: async_nats::ConnectError,
    },
    /// The stream's settings could not be read.
    #[error("cannot read stream {name}: {source}")]
    StreamInfo {
        /// The stream.
        name: String,
        /// What JetStream reported.
        source: jetstream::context::GetStreamError,
    },
    /// The stream could not be created or updated.
    #[error("cannot create or update stream {name}: {source}")]
    StreamWrite {
        /// The stream.
        name: String,
        /// What JetStream reported.
        source: jetstream::context::CreateStreamError,
    },
    /// The stream exists with other settings, and `on_mismatch` says fail.
    #[error(
        "stream {name} exists with other settings ({differences}); set nats.stream.on_mismatch = \"update\" or change the stream"
    )]
    StreamMismatch {
        /// The stream.
        name: String,
        /// The differing settings, as `key: actual → wanted`.
        differences: String,
    },
    /// The stream exists with another storage type, which JetStream cannot change.
    #[error(
        "stream {name} stores in {actual:?}, configured {wanted:?}: storage cannot be changed on an existing stream"
    )]
    StorageMismatch {
        /// The stream.
        name: String,
        /// The stream's storage.
        actual: stream::StorageType,
        /// The configured storage.
        wanted: stream::StorageType,
    },
    /// A publish was not acknowledged.
    #[error("publish to {subject} failed: {source}")]
    Publish {
        /// The message's subject.
        subject: String,
        /// What JetStream reported.
        source: jetstream::context::PublishError,
    },
}

/// What [`Publisher::ensure_stream`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    /// The stream did not exist and was created.
    Created,
    /// The stream exists with the configured settings.
    Unchanged,
    /// Updated; the settings that changed, as `key: old → new`.
    Updated(Vec<String>),
}

/// One message ready to publish: what the outbox stores and [`Publisher::publish_batch`] sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// The subject it is published on.
    pub subject: String,
    /// Sent as `Nats-Msg-Id`: JetStream stores a message with a given id once per window.
    pub id: String,
    /// The event type, for metrics and logs.
    pub kind: String,
    /// The JSON body, kept as JSON (the outbox stores it inside its own lines unescaped).
    pub payload: Box<serde_json::value::RawValue>,
}

/// What can be published: a serializable event that knows its subject, its id (sent as
/// `Nats-Msg-Id`) and its kind. [`Message::of`] turns one into a [`Message`].
pub trait Publishable: Serialize {
    /// The subject it goes to.
    fn subject(&self) -> &str;
    /// Its id: JetStream stores one message per id within the duplicate window.
    fn id(&self) -> &str;
    /// Its kind (the event type or action), for metrics and logs.
    fn kind(&self) -> &str;
}

impl Message {
    /// The message that publishes `event`, with `event` as its JSON payload.
    pub fn of(event: &impl Publishable) -> Self {
        Self {
            subject: event.subject().to_owned(),
            id: event.id().to_owned(),
            kind: event.kind().to_owned(),
            // Serializing plain structs of strings and numbers cannot fail.
            payload: serde_json::value::to_raw_value(event).expect("events always serialize"),
        }
    }
}

impl Publishable for LifecycleEvent {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        self.event_type.as_str()
    }
}

impl Publishable for EventsLost {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        &self.kind
    }
}

/// The result of one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The stream sequence JetStream gave the message (the first one's, for a duplicate).
    pub stream_sequence: u64,
    /// JetStream had already stored an event with this id (a re-announcement or a retry).
    pub duplicate: bool,
}

/// Publishes [`Message`]s to one JetStream stream and keeps that stream's settings.
#[derive(Debug, Clone)]
pub struct Publisher {
    jetstream: jetstream::Context,
    subjects: SubjectScheme,
}

impl Publisher {
    /// Connects to NATS. The connection is made in the background and retried for ever, so this
    /// returns at once; [`Publisher::ensure_stream`] is the first call that needs the server.
    /// `on_event` hears every connection event (connected, disconnected, …).
    pub async fn connect(
        config: &NatsConfig,
        on_event: impl Fn(&async_nats::Event) + Send + Sync + 'static,
    ) -> Result<Self, PublishError> {
        let on_event = std::sync::Arc::new(on_event);
        let options = ConnectOptions::new()
            .name("pc-eventd")
            .retry_on_initial_connect()
            .connection_timeout(config.connect_timeout)
            .event_callback(move |event| {
                on_event(&event);
                async move { info!(%event, "nats connection") }
            });
        // Authentication, TLS and the server list come from the one place `watch` uses too.
        let client = config
            .connect(options)
            .await
            .map_err(|source| PublishError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .build(client);
        Ok(Self {
            jetstream,
            subjects: config.subjects(),
        })
    }

    /// Makes sure the stream exists with the configured settings. An existing stream whose
    /// settings differ is updated (and the differences logged) or reported, never ignored.
    pub async fn ensure_stream(
        &self,
        config: &StreamConfig,
    ) -> Result<StreamOutcome, PublishError> {
        let wanted = self.stream_config(config);
        let existing = match self.jetstream.get_stream(&config.name).await {
            Ok(stream) => stream.cached_info().config.clone(),
            Err(err) if is_not_found(&err) => {
                self.jetstream
                    .create_stream(&wanted)
                    .await
                    .map_err(|source| PublishError::StreamWrite {
                        name: config.name.clone(),
                        source,
                    })?;
                info!(stream = %config.name, "stream created");
                return Ok(StreamOutcome::Created);
            }
            Err(source) => {
                return Err(PublishError::StreamInfo {
                    name: config.name.clone(),
                    source,
                });
            }
        };

        self.reconcile_stream(config, existing, wanted).await
    }

    /// Brings an existing stream (`existing`) to the configured settings (`wanted`): nothing to
    /// do, an update (the differences logged), or a refusal when `on_mismatch` says fail or the
    /// storage differs.
    async fn reconcile_stream(
        &self,
        config: &StreamConfig,
        existing: stream::Config,
        wanted: stream::Config,
    ) -> Result<StreamOutcome, PublishError> {
        let differences = stream_differences(&existing, &wanted);
        if differences.is_empty() {
            return Ok(StreamOutcome::Unchanged);
        }
        if existing.storage != wanted.storage {
            return Err(PublishError::StorageMismatch {
                name: config.name.clone(),
                actual: existing.storage,
                wanted: wanted.storage,
            });
        }
        if config.on_mismatch == OnMismatch::Fail {
            return Err(PublishError::StreamMismatch {
                name: config.name.clone(),
                differences: differences.join(", "),
            });
        }
        // Keep every setting we do not manage as the operator left it.
        let updated = stream::Config {
            subjects: wanted.subjects,
            max_age: wanted.max_age,
            duplicate_window: wanted.duplicate_window,
            num_replicas: wanted.num_replicas,
            ..existing
        };
        self.jetstream
            .update_stream(&updated)
            .await
            .map_err(|source| PublishError::StreamWrite {
                name: config.name.clone(),
                source,
            })?;
        warn!(stream = %config.name, changes = %differences.join(", "), "stream settings updated");
        Ok(StreamOutcome::Updated(differences))
    }

    /// The JetStream context, for other JetStream state kept beside the stream.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    fn stream_config(&self, config: &StreamConfig) -> stream::Config {
        stream::Config {
            name: config.name.clone(),
            subjects: vec![self.subjects.wildcard()],
            max_age: config.max_age,
            duplicate_window: config.duplicate_window,
            num_replicas: config.replicas,
            storage: match config.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            ..Default::default()
        }
    }

    /// Publishes `messages` in order with up to `window` acks outstanding. Stops at the first
    /// failure: [`Batch::acknowledged`] is the prefix JetStream acknowledged, in order. Messages
    /// after it may have been stored too; re-publishing them is safe, since their ids repeat.
    pub async fn publish_batch(&self, messages: &[&Message], window: usize) -> Batch {
        let mut in_flight = std::collections::VecDeque::with_capacity(window);
        let mut batch = Batch {
            acknowledged: Vec::with_capacity(messages.len()),
            error: None,
        };
        for &event in messages {
            if in_flight.len() >= window.max(1) {
                let (event, ack) = in_flight.pop_front().expect("the window is full");
                if !batch.record(await_ack(event, ack).await) {
                    break;
                }
            }
            match self.send(event).await {
                Ok(ack) => in_flight.push_back((event, ack)),
                Err(err) => {
                    batch.error.get_or_insert(err);
                    break;
                }
            }
        }
        // Await what is out even after a failure (an ack future left unawaited holds its
        // in-flight permit until it times out), all together: with NATS gone, one by one
        // would take a timeout each.
        let results = futures::future::join_all(
            in_flight
                .into_iter()
                .map(|(message, ack)| await_ack(message, ack)),
        )
        .await;
        for result in results {
            if batch.error.is_some() || !batch.record(result) {
                break;
            }
        }
        batch
    }

    /// Queues one publish; the returned future resolves with JetStream's ack.
    async fn send(
        &self,
        message: &Message,
    ) -> Result<jetstream::context::PublishAckFuture, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.id.as_str());
        self.jetstream
            .publish_with_headers(
                message.subject.clone(),
                headers,
                bytes::Bytes::copy_from_slice(message.payload.get().as_bytes()),
            )
            .await
            .map_err(|source| PublishError::Publish {
                subject: message.subject.clone(),
                source,
            })
    }
}

/// What [`Publisher::publish_batch`] achieved.
#[derive(Debug)]
pub struct Batch {
    /// Acks for the leading events, in order.
    pub acknowledged: Vec<Published>,
    /// What stopped the batch, if anything did.
    pub error: Option<PublishError>,
}

impl Batch {
    /// Adds one result; false once an error has stopped the batch.
    fn record(&mut self, result: Result<Published, PublishError>) -> bool {
        match result {
            Ok(published) => {
                self.acknowledged.push(published);
                true
            }
            Err(err) => {
                self.error = Some(err);
                false
            }
        }
    }
}

async fn await_ack(
    event: &Message,
    ack: jetstream::context::PublishAckFuture,
) -> Result<Published, PublishError> {
    let ack = ack.await.map_err(|source| PublishError::Publish {
        subject: event.subject.clone(),
        source,
    })?;
    Ok(Published {
        stream_sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// The managed settings in which `actual` differs from `wanted`.
fn stream_differences(actual: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let mut differences = Vec::new();
    let mut compare = |key: &str, actual: String, wanted: String| {
        if actual != wanted {
            differences.push(format!("{key}: {actual} → {wanted}"));
        }
    };
    compare(
        "subjects",
        actual.subjects.join(","),
        wanted.subjects.join(","),
    );
    compare(
        "max_age",
        humantime::format_duration(actual.max_age).to_string(),
        humantime::format_duration(wanted.max_age).to_string(),
    );
    compare(
        "duplicate_window",
        humantime::format_duration(actual.duplicate_window).to_string(),
        humantime::format_duration(wanted.duplicate_window).to_string(),
    );
    compare(
        "replicas",
        actual.num_replicas.to_string(),
        wanted.num_replicas.to_string(),
    );
    compare(
        "storage",
        format!("{:?}", actual.storage).to_lowercase(),
        format!("{:?}", wanted.storage).to_lowercase(),
    );
    differences
}
