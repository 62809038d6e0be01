//! The relay: moves entries from the outbox to JetStream, oldest first, and only then records
//! them as published (the state store, then the outbox cursor) at a checkpoint: at once when
//! the outbox runs empty, at most every [`CHECKPOINT_EVERY`] during a burst, so a process that
//! changes fast is saved once per checkpoint instead of once per event.
//!
//! It runs beside the event loop, so a NATS outage never stops observation: the loop keeps
//! diffing into the outbox, and the relay catches up when NATS is back, with the original ids.
//! While publishes fail it sends only the oldest entry, at most a second apart, so that it
//! notices within a second that the stream is served again (a cluster electing a new leader)
//! at the cost of one small publish per retry, however much is queued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pc_eventd_events::publish::{Message, PublishError, Published, Publisher};
use pc_eventd_events::retry;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::delivery::outbox::{Entry, Outbox};
use crate::delivery::records::StateStore;
use crate::diff::ProcessRecord;
use crate::ops::status::{OutboxFill, Status};
use crate::sync::lock;

/// Publishes in flight at once: enough to keep a burst (a reconnect's catch-up, a project
/// start) far from the round-trip bound, few enough to bound what a failure re-sends.
const PUBLISH_WINDOW: usize = 256;
/// Messages taken from the outbox per round.
const ROUND: usize = 4 * PUBLISH_WINDOW;
/// Shortest and longest wait between two attempts to reach NATS. The longest bounds how late
/// the relay notices that the stream is served again. A cluster that lost the node leading the
/// stream elects a new leader after nats-server's election timeout (4 to 9 s) and meanwhile
/// answers every publish at once with "no responders": the waits doubled up to the cap within
/// the election, and a 10 s cap held the first publish after it back by up to 10 s
/// (docs/reliability.md, "The election delay"). A retry is a one-entry probe, so a short cap
/// costs the servers little.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often an idle relay looks whether the outbox is due an fsync.
const SYNC_TICK: Duration = Duration::from_millis(200);
/// Longest time published entries wait for their checkpoint while more keep coming. A daemon
/// killed in between sends them again from the outbox at its next start, and JetStream drops
/// them: this must stay well inside the stream's duplicate window.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Entries published but not yet recorded as such.
#[derive(Default)]
struct Unrecorded {
    /// The index of the last of them.
    through: Option<u64>,
    /// The records they leave behind, newest per process.
    records: BTreeMap<String, Option<ProcessRecord>>,
}

/// A run of failed publishes.
struct Failing {
    /// Failed publishes in a row.
    attempts: u32,
    /// When the first of them failed.
    since: Instant,
}

/// Publishes what the outbox holds, in order, and records what JetStream acknowledged.
pub struct Relay {
    outbox: Arc<Mutex<Outbox>>,
    status: Arc<Status>,
    state: Arc<tokio::sync::Mutex<Option<StateStore>>>,
    /// The publisher to use; `None` while the stream is not known to be right.
    publishers: watch::Receiver<Option<Publisher>>,
    /// Notified when an entry is pushed.
    wake: Arc<Notify>,
    /// After `finish`, how long the relay may still try to empty the outbox.
    shutdown_timeout: Duration,
    /// Set while publishes fail.
    failing: Option<Failing>,
    /// Once finishing: when to give up on emptying the outbox.
    deadline: Option<Instant>,
    unrecorded: Unrecorded,
    last_checkpoint: Instant,
}

impl Relay {
    /// A relay for `outbox`, woken by `wake`, publishing through the latest of `publishers`
    /// and keeping the records of what it published in `state`.
    pub fn new(
        outbox: Arc<Mutex<Outbox>>,
        wake: Arc<Notify>,
        publishers: watch::Receiver<Option<Publisher>>,
        state: Arc<tokio::sync::Mutex<Option<StateStore>>>,
        status: Arc<Status>,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            outbox,
            status,
            state,
            publishers,
            wake,
            shutdown_timeout,
            failing: None,
            deadline: None,
            unrecorded: Unrecorded::default(),
            last_checkpoint: Instant::now(),
        }
    }

    /// Runs until `finish` is cancelled and then the outbox is empty or `shutdown_timeout` has
    /// passed; what is left stays on disk for the next start.
    pub async fn run(mut self, finish: CancellationToken) {
        loop {
            if self.past_deadline(&finish) {
                break;
            }
            // While publishes fail, the oldest entry alone probes whether they work again.
            let round = if self.failing.is_some() { 1 } else { ROUND };
            let entries = lock(&self.outbox).peek_after(self.unrecorded.through, round);
            self.report();
            if entries.is_empty() {
                if !self.idle(&finish).await {
                    break;
                }
                continue;
            }
            let publisher = tokio::select! {
                ready = self.publishers.wait_for(Option::is_some) => match ready {
                    Ok(publisher) => publisher.clone().expect("waited for it"),
                    Err(_) => break,
                },
                () = interrupted(&finish, self.deadline) => continue,
            };
            let messages: Vec<&Message> = entries.iter().flat_map(|e| &e.messages).collect();
            let batch = publisher.publish_batch(&messages, PUBLISH_WINDOW).await;
            self.count(&messages, &batch.acknowledged);
            self.settle(entries, batch.acknowledged.len()).await;
            match batch.error {
                None => self.publishing(),
                Some(err) => self.back_off(&err, &finish).await,
            }
        }
        self.stop().await;
    }

    /// Once finishing, whether the deadline for emptying the outbox has passed (the first
    /// call after `finish` sets it).
    fn past_deadline(&mut self, finish: &CancellationToken) -> bool {
        if !finish.is_cancelled() {
            return false;
        }
        let at = *self
            .deadline
            .get_or_insert(Instant::now() + self.shutdown_timeout);
        Instant::now() >= at
    }

    /// With nothing to send: records what was published, then waits for a push, a tick or
    /// the end. False once finishing, with the outbox empty.
    async fn idle(&mut self, finish: &CancellationToken) -> bool {
        self.checkpoint().await;
        if finish.is_cancelled() {
            return false;
        }
        tokio::select! {
            () = self.wake.notified() => {}
            () = interrupted(finish, self.deadline) => {}
            () = tokio::time::sleep(SYNC_TICK) => {}
        }
        if let Err(err) = lock(&self.outbox).sync_due() {
            error!(error = %err, "cannot flush the outbox to disk");
        }
        true
    }

    /// Counts what JetStream acknowledged: new events by kind, and duplicates.
    fn count(&self, messages: &[&Message], acknowledged: &[Published]) {
        let metrics = &self.status.metrics;
        for (message, published) in messages.iter().zip(acknowledged) {
            if published.duplicate {
                metrics.events_deduplicated.inc();
                debug!(subject = %message.subject, id = %message.id, seq = published.stream_sequence, "already in the stream");
            } else {
                metrics.published(&message.kind);
                debug!(subject = %message.subject, id = %message.id, seq = published.stream_sequence, "published");
            }
        }
    }

    /// Marks the entries whose messages were all acknowledged (the first `acknowledged`
    /// messages) as published, and records them when a checkpoint is due. A partly sent entry
    /// goes again.
    async fn settle(&mut self, entries: Vec<Arc<Entry>>, acknowledged: usize) {
        let done = whole_entries(entries, acknowledged);
        if let Some(last) = done.last() {
            self.unrecorded.through = Some(last.index);
            for entry in &done {
                self.unrecorded
                    .records
                    .extend(entry.records.iter().cloned());
            }
        }
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.checkpoint().await;
        }
    }

    /// After a publish went through: ends a run of failures, saying how long it lasted.
    fn publishing(&mut self) {
        if let Some(failing) = self.failing.take() {
            info!(failed_attempts = failing.attempts, after = ?failing.since.elapsed(), "publishing again");
        }
        self.status.set_publish(Ok(()));
    }

    /// After a failed publish: reports it and waits before the next attempt. The first failure
    /// of a run is a warning, the retries (up to one a second) are debug lines; the status,
    /// /readyz and the error counter say that it goes on.
    async fn back_off(&mut self, err: &PublishError, finish: &CancellationToken) {
        self.status.metrics.publish_errors.inc();
        self.status.set_publish(Err(err.to_string()));
        let failing = self.failing.get_or_insert(Failing {
            attempts: 0,
            since: Instant::now(),
        });
        failing.attempts = failing.attempts.saturating_add(1);
        let attempts = failing.attempts;
        let wait = retry::jittered_delay(attempts, RETRY_MIN, RETRY_MAX);
        let queued = lock(&self.outbox).pending_messages();
        if attempts == 1 {
            warn!(error = %err, queued, retry_in = ?wait, "publish failed, will retry with the same ids");
        } else {
            debug!(error = %err, queued, attempts, retry_in = ?wait, "publish failed again");
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = interrupted(finish, self.deadline) => {}
        }
    }

    /// Records what was published, flushes the outbox, and says what is left in it.
    async fn stop(mut self) {
        self.checkpoint().await;
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
    async fn checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        let Some(through) = self.unrecorded.through.take() else {
            return;
        };
        let records = std::mem::take(&mut self.unrecorded.records);
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

/// The leading entries whose messages are all among the first `acknowledged`.
fn whole_entries(entries: Vec<Arc<Entry>>, acknowledged: usize) -> Vec<Arc<Entry>> {
    let mut unaccounted = acknowledged;
    entries
        .into_iter()
        .take_while(|e| {
            let whole = unaccounted >= e.messages.len();
            unaccounted = unaccounted.saturating_sub(e.messages.len());
            whole
        })
        .collect()
}

/// The outbox's fill, in the numbers status reports.
pub(crate) fn fill(outbox: &Outbox) -> OutboxFill {
    OutboxFill {
        messages: outbox.pending_messages(),
        bytes: outbox.pending_bytes(),
        losing: outbox.loss().map(|loss| (loss.lost, loss.first_lost_at)),
    }
}
