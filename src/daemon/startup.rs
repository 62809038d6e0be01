//! Opening the delivery side before events may flow: the outbox, the stream and the state
//! bucket, each waited for until it is there or the daemon is told to stop.

use std::time::{Duration, Instant};

use pc_eventd_events::event::EventsLost;
use pc_eventd_events::publish::{Message, PublishError, Publisher};
use pc_eventd_events::retry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Daemon, DaemonError};
use crate::config::ConfigError;
use crate::delivery::outbox::{Outbox, OutboxError};
use crate::delivery::records::StateStore;
use crate::delivery::relay;
use crate::diff::Snapshot;
use crate::sync::lock;

/// Shortest and longest wait between two attempts to reach NATS.
const NATS_RETRY_MIN: Duration = Duration::from_millis(200);
const NATS_RETRY_MAX: Duration = Duration::from_secs(10);

/// How much longer than its shutdown timeout a predecessor may hold the outbox's lock.
const OUTBOX_LOCK_SLACK: Duration = Duration::from_secs(5);

impl Daemon {
    /// Opens the outbox of this process-compose instance in the state directory.
    /// Waits (up to the shutdown timeout and 5 s more) for a lock held by another daemon: a
    /// predecessor killed or stopping may not have exited yet when its successor starts.
    /// `None`: shut down while waiting.
    pub(super) async fn open_outbox(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Outbox>, DaemonError> {
        let source = self.config.process_compose.source();
        let state_dir = self.config.daemon.state_dir().ok_or_else(|| {
            ConfigError::one(
                "daemon.state_dir: not set, and none of STATE_DIRECTORY, XDG_STATE_HOME or HOME is"
                    .into(),
            )
        })?;
        // One directory per instance: several daemons may share a state directory.
        let dir = state_dir
            .join("outbox")
            .join(pc_eventd_events::event::subject_token(&source).replace('/', "%2F"));
        let loss_marker = || -> crate::delivery::outbox::LossMarker {
            let (subjects, source) = (self.config.nats.subjects(), source.clone());
            Box::new(move |loss| {
                let marker = EventsLost::new(
                    &subjects,
                    &source,
                    loss.lost,
                    loss.first_lost_at,
                    loss.last_lost_at,
                );
                Message::of(&marker)
            })
        };
        let give_up_at = Instant::now() + self.config.daemon.shutdown_timeout + OUTBOX_LOCK_SLACK;
        let mut said = false;
        let outbox = loop {
            let outbox = &self.config.outbox;
            match Outbox::open(&dir, outbox.max_bytes, outbox.fsync_interval, loss_marker()) {
                Err(OutboxError::Locked(_)) if Instant::now() < give_up_at => {
                    if !std::mem::replace(&mut said, true) {
                        warn!(dir = %dir.display(), "the outbox is locked by another pc-eventd; waiting for it to exit");
                    }
                    let pause = tokio::time::sleep(Duration::from_millis(500));
                    if shutdown.run_until_cancelled(pause).await.is_none() {
                        return Ok(None);
                    }
                }
                opened => break opened?,
            }
        };
        let queued = outbox.pending_messages();
        info!(dir = %dir.display(), queued, "outbox open");
        self.status.set_outbox(relay::fill(&outbox));
        Ok(Some(outbox))
    }

    /// Opens the state store beside the stream. On the first open it also loads what the last
    /// run published (a restart resumes from it); after a reload to other NATS settings it
    /// writes the current state there instead. False: not yet, retry after a pause.
    pub(super) async fn open_state(
        &self,
        publisher: &Publisher,
        snapshot: &mut Snapshot,
        shutdown: &CancellationToken,
    ) -> bool {
        let bucket = self.config.nats.stream.state_bucket();
        let source = self.config.process_compose.source();
        let replicas = self.config.nats.stream.replicas;
        let opened = StateStore::open(publisher.jetstream(), &bucket, replicas, &source);
        let Some(opened) = shutdown.run_until_cancelled(opened).await else {
            return false;
        };
        let loaded = match opened {
            Ok(store) if self.state_loaded.load(std::sync::atomic::Ordering::Relaxed) => {
                let mut store = store;
                store
                    .save(snapshot.records(snapshot.names().cloned()))
                    .await;
                Ok(store)
            }
            Ok(store) => store.load().await.map(|loaded| {
                *snapshot = loaded;
                // What the last run observed but NATS has not acknowledged yet.
                let queue = self.queue.as_ref().expect("run() opens the outbox first");
                let outbox = lock(&queue.outbox);
                snapshot.overlay(outbox.pending_records());
                info!(bucket = %bucket, processes = snapshot.len(), queued = outbox.pending_messages(), "resuming from the last published state and the outbox");
                store
            }),
            Err(err) => Err(err),
        };
        match loaded {
            Ok(store) => {
                *self.state.lock().await = Some(store);
                self.state_loaded
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(err) => {
                warn!(error = %err, "waiting for the state bucket");
                self.status.set_stream(Err(err.to_string()));
                let wait = Duration::from_secs(1);
                self.status.expect_within(wait);
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = self.watchdog.sleep(wait) => {}
                }
                false
            }
        }
    }

    /// Tries once to make the stream right. `Ok(false)`: not yet (NATS unreachable), retry after
    /// a pause; an error: a mismatch retrying cannot fix.
    pub(super) async fn ensure_stream(
        &self,
        publisher: &Publisher,
        shutdown: &CancellationToken,
    ) -> Result<bool, PublishError> {
        let stream = &self.config.nats.stream;
        self.status.expect_within(self.config.nats.ack_timeout);
        let Some(ensured) = shutdown
            .run_until_cancelled(publisher.ensure_stream(stream))
            .await
        else {
            return Ok(false);
        };
        match ensured {
            Ok(outcome) => {
                info!(stream = %stream.name, ?outcome, "stream ready");
                self.status.set_stream(Ok(()));
                Ok(true)
            }
            Err(
                err @ (PublishError::StreamMismatch { .. } | PublishError::StorageMismatch { .. }),
            ) => {
                self.status.set_stream(Err(err.to_string()));
                Err(err)
            }
            Err(err) => {
                warn!(error = %err, "waiting for NATS JetStream");
                self.status.set_stream(Err(err.to_string()));
                let wait = retry::jittered_delay(1, NATS_RETRY_MIN, NATS_RETRY_MAX)
                    .max(Duration::from_secs(1));
                self.status.expect_within(wait);
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = self.watchdog.sleep(wait) => {}
                }
                Ok(false)
            }
        }
    }
}
