//! The poll → diff → publish loop.
//!
//! One task: poll `GET /processes`, diff against what was last published, publish each event and
//! wait for its ack, then sleep. The snapshot only advances once every event of an observation is
//! acknowledged, so a NATS outage delays events instead of dropping them (until shutdown).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::compose::ComposeClient;
use crate::config::{Config, ConfigError};
use crate::diff::{DiffContext, Snapshot, diff};
use crate::event::LifecycleEvent;
use crate::publish::{PublishError, Publisher};

/// Shortest and longest wait between two attempts to reach NATS.
const NATS_RETRY_MIN: Duration = Duration::from_millis(200);
const NATS_RETRY_MAX: Duration = Duration::from_secs(10);

/// Counters of what the daemon did; shared with whoever reports them.
#[derive(Debug, Default)]
pub struct Stats {
    pub polls: AtomicU64,
    pub poll_errors: AtomicU64,
    /// Responses that arrived but could not be decoded (a subset of `poll_errors`).
    pub malformed_responses: AtomicU64,
    pub events_published: AtomicU64,
    /// Publishes JetStream acknowledged as duplicates of an id it already had.
    pub events_deduplicated: AtomicU64,
    pub publish_errors: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let compose = ComposeClient::from_config(&config)?;
    let publisher = Publisher::connect(&config.nats).await?;
    let source = config.process_compose.source();
    info!(
        %source,
        nats = %config.nats.url,
        poll_interval = ?config.process_compose.poll_interval,
        "pc-eventd running"
    );

    if !ensure_stream(&publisher, &config, &shutdown).await? {
        return Ok(());
    }

    let subjects = config.nats.subjects();
    let mut snapshot = Snapshot::default();
    let mut failures: u32 = 0;
    loop {
        let wait = match compose.processes().await {
            Ok(observed) => {
                Stats::bump(&stats.polls);
                if failures > 0 {
                    info!(
                        after_failures = failures,
                        "process-compose is answering again"
                    );
                }
                failures = 0;
                let ctx = DiffContext {
                    source: &source,
                    subjects: &subjects,
                    observed_at: SystemTime::now(),
                };
                let (next, events) = diff(&snapshot, &observed, &ctx);
                if !publish_all(&publisher, &events, &stats, &shutdown).await {
                    error!(
                        unpublished = events.len(),
                        "shutting down with events NATS never acknowledged"
                    );
                    break;
                }
                snapshot = next;
                config.process_compose.poll_interval
            }
            Err(err) => {
                Stats::bump(&stats.poll_errors);
                if matches!(err, crate::compose::ComposeError::Malformed(_)) {
                    Stats::bump(&stats.malformed_responses);
                }
                failures = failures.saturating_add(1);
                let wait = backoff(
                    failures,
                    config.process_compose.poll_interval,
                    config.process_compose.max_backoff,
                );
                warn!(error = %err, kind = err.kind(), consecutive = failures, retry_in = ?wait, "poll failed");
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    info!("pc-eventd stopped");
    Ok(())
}

/// Retries until the stream is right, NATS refuses for a reason retrying cannot fix, or shutdown
/// (`Ok(false)`).
async fn ensure_stream(
    publisher: &Publisher,
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<bool, PublishError> {
    let mut attempt = 0;
    loop {
        match publisher.ensure_stream(&config.nats.stream).await {
            Ok(outcome) => {
                info!(stream = %config.nats.stream.name, ?outcome, "stream ready");
                return Ok(true);
            }
            Err(
                err @ (PublishError::StreamMismatch { .. } | PublishError::StorageMismatch { .. }),
            ) => {
                return Err(err);
            }
            Err(err) => {
                attempt += 1;
                let wait = backoff(attempt, NATS_RETRY_MIN, NATS_RETRY_MAX);
                warn!(error = %err, retry_in = ?wait, "waiting for NATS JetStream");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(false),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Publishes events in order, each retried with the same id until JetStream acknowledges it.
/// Returns false if shutdown came first.
async fn publish_all(
    publisher: &Publisher,
    events: &[LifecycleEvent],
    stats: &Stats,
    shutdown: &CancellationToken,
) -> bool {
    for event in events {
        let span = info_span!("publish", subject = %event.subject, id = %event.id);
        let mut attempt = 0;
        loop {
            match publisher.publish(event).instrument(span.clone()).await {
                Ok(published) => {
                    if published.duplicate {
                        Stats::bump(&stats.events_deduplicated);
                        debug!(parent: &span, seq = published.stream_sequence, "already in the stream");
                    } else {
                        Stats::bump(&stats.events_published);
                        debug!(parent: &span, seq = published.stream_sequence, summary = %event.summary(), "published");
                    }
                    break;
                }
                Err(err) => {
                    Stats::bump(&stats.publish_errors);
                    attempt += 1;
                    let wait = backoff(attempt, NATS_RETRY_MIN, NATS_RETRY_MAX);
                    warn!(parent: &span, error = %err, retry_in = ?wait, "publish failed, will retry with the same id");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
    true
}

/// Capped exponential backoff with equal jitter: half the step is fixed, half random, so that
/// many daemons restarted together do not retry in lockstep.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let step = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    step / 2 + (step / 2).mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(30);
        for attempt in 1..40 {
            let wait = backoff(attempt, base, max);
            let step = (base * 2u32.pow(attempt.saturating_sub(1).min(20))).min(max);
            assert!(
                wait >= step / 2 && wait <= step,
                "attempt {attempt}: {wait:?}"
            );
        }
        assert!(backoff(1, base, max) <= base);
        assert!(backoff(10, base, max) >= max / 2);
    }
}
