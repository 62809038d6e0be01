//! The relay: moves entries from the outbox to JetStream, oldest first, and only then records
//! them as published (the state store, then the outbox cursor) at a checkpoint: at once when
//! the outbox runs empty, at most every [`CHECKPOINT_EVERY`] during a burst, so a process that
//! changes fast is saved once per checkpoint instead of once per event.
//!
//! It runs beside the event loop, so a NATS outage never stops observation: the loop keeps
//! diffing into the outbox, and the relay catches up when NATS is back, with the original ids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pc_eventd_events::publish::{Message, Publisher};
use pc_eventd_events::retry;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::delivery::outbox::Outbox;
use crate::delivery::records::StateStore;
use crate::diff::ProcessRecord;
use crate::ops::status::{OutboxFill, Status};
use crate::sync::lock;

/// Publishes in flight at once: enough to keep a burst (a reconnect's catch-up, a project
/// start) far from the round-trip bound, few enough to bound what a failure re-sends.
const PUBLISH_WINDOW: usize = 256;
/// Messages taken from the outbox per round.
const ROUND: usize = 4 * PUBLISH_WINDOW;
/// Shortest and longest wait between two attempts to reach NATS.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often an idle relay looks whether the outbox is due an fsync.
const SYNC_TICK: Duration = Duration::from_millis(200);
/// Longest time published entries wait for their checkpoint while more keep coming. A daemon
/// killed in between sends them again from the outbox at its next start, and JetStream drops
/// them: this must stay well inside the stream's duplicate window.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Entries published but not yet recorded as such.
#[derive(Default)]
struct Unrecorded {
    /// The index of the last of them.
    through: Option<u64>,
    /// The records they leave behind, newest per process.
    records: BTreeMap<String, Option<ProcessRecord>>,
}

pub struct Relay {
    pub outbox: Arc<Mutex<Outbox>>,
    pub status: Arc<Status>,
    pub state: Arc<tokio::sync::Mutex<Option<StateStore>>>,
    /// The publisher to use; `None` while the stream is not known to be right.
    pub publishers: watch::Receiver<Option<Publisher>>,
    /// Notified when an entry is pushed.
    pub wake: Arc<Notify>,
    /// After `finish`, how long the relay may still try to empty the outbox.
    pub shutdown_timeout: Duration,
}

impl Relay {
    /// Runs until `finish` is cancelled and then the outbox is empty or `shutdown_timeout` has
    /// passed; what is left stays on disk for the next start.
    pub async fn run(mut self, finish: CancellationToken) {
        let mut attempt: u32 = 0;
        let mut deadline: Option<Instant> = None;
        let mut published = Unrecorded::default();
        let mut last_checkpoint = Instant::now();
        loop {
            if finish.is_cancelled() {
                let at = *deadline.get_or_insert(Instant::now() + self.shutdown_timeout);
                if Instant::now() >= at {
                    break;
                }
            }
            let entries = lock(&self.outbox).peek_after(published.through, ROUND);
            self.report();
            if entries.is_empty() {
                self.checkpoint(&mut published).await;
                last_checkpoint = Instant::now();
                if finish.is_cancelled() {
                    break;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = interrupted(&finish, deadline) => {}
                    () = tokio::time::sleep(SYNC_TICK) => {}
                }
                if let Err(err) = lock(&self.outbox).sync_due() {
                    error!(error = %err, "cannot flush the outbox to disk");
                }
                continue;
            }
            let publisher = tokio::select! {
                ready = self.publishers.wait_for(Option::is_some) => match ready {
                    Ok(publisher) => publisher.clone().expect("waited for it"),
                    Err(_) => break,
                },
                () = interrupted(&finish, deadline) => continue,
            };
            let messages: Vec<&Message> = entries.iter().flat_map(|e| &e.messages).collect();
            let batch = publisher.publish_batch(&messages, PUBLISH_WINDOW).await;
            let metrics = &self.status.metrics;
            for (message, published) in messages.iter().zip(&batch.acknowledged) {
                if published.duplicate {
                    metrics.events_deduplicated.inc();
                    debug!(subject = %message.subject, id = %message.id, seq = published.stream_sequence, "already in the stream");
                } else {
                    metrics.published(&message.kind);
                    debug!(subject = %message.subject, id = %message.id, seq = published.stream_sequence, "published");
                }
            }
            // Entries are done when all their messages are in; a partly sent one goes again.
            let mut unaccounted = batch.acknowledged.len();
            let done: Vec<_> = entries
                .into_iter()
                .take_while(|e| {
                    let whole = unaccounted >= e.messages.len();
                    unaccounted = unaccounted.saturating_sub(e.messages.len());
                    whole
                })
                .collect();
            if let Some(last) = done.last() {
                published.through = Some(last.index);
                for entry in &done {
                    published.records.extend(entry.records.iter().cloned());
                }
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.checkpoint(&mut published).await;
                last_checkpoint = Instant::now();
            }
            let Some(err) = batch.error else {
                attempt = 0;
                self.status.set_publish(Ok(()));
                continue;
            };
            metrics.publish_errors.inc();
            self.status.set_publish(Err(err.to_string()));
            attempt = attempt.saturating_add(1);
            let wait = retry::jittered_delay(attempt, RETRY_MIN, RETRY_MAX);
            warn!(error = %err, queued = lock(&self.outbox).pending_messages(), retry_in = ?wait, "publish failed, will retry with the same ids");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = interrupted(&finish, deadline) => {}
            }
        }
        self.checkpoint(&mut published).await;
        let mut outbox = lock(&self.outbox);
        if let Err(err) = outbox.sync() {
            error!(error = %err, "cannot flush the outbox to disk");
        }
        let left = outbox.pending_messages();
        if left > 0 {
            warn!(
                left,
                "stopping with events NATS has not acknowledged: they stay in the outbox and go out at the next start"
            );
        }
        drop(outbox);
        self.report();
    }

    /// Records the published entries: their records in the state store, then the outbox's
    /// acknowledgement.
    async fn checkpoint(&self, published: &mut Unrecorded) {
        let Some(through) = published.through.take() else {
            return;
        };
        let records = std::mem::take(&mut published.records);
        if let Some(store) = self.state.lock().await.as_mut() {
            store.save(records.into_iter().collect()).await;
        }
        if let Err(err) = lock(&self.outbox).ack(through) {
            // The entries go out again at the next start; JetStream drops them.
            error!(error = %err, "cannot record published entries in the outbox");
        }
    }

    fn report(&self) {
        self.status.set_outbox(fill(&lock(&self.outbox)));
    }
}

/// Resolves when waiting should stop: at shutdown, or once shutting down, at the deadline.
async fn interrupted(finish: &CancellationToken, deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => finish.cancelled().await,
    }
}

/// The outbox's fill, in the numbers status reports.
pub fn fill(outbox: &Outbox) -> OutboxFill {
    OutboxFill {
        messages: outbox.pending_messages(),
        bytes: outbox.pending_bytes(),
        losing: outbox.loss().map(|loss| (loss.lost, loss.first_lost_at)),
    }
}
