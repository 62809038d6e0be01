//! `pc-eventd alert`: a webhook sink. Chosen event types are grouped into episodes (see
//! [`episode`]): a crash loop is one `opened` alert, one `escalated` when it goes on, and one
//! `resolved` after a quiet period, not one call per restart; a condition (`given_up`,
//! `resource_pressure`, `silent`) is one `opened` alert and one `resolved` when the event that
//! ends it comes. A crash's alerts carry its last output lines.
//!
//! Events come through a durable consumer, so alerting resumes where it stopped. An episode's
//! state advances only once its alert was delivered: a webhook that keeps failing (after its
//! retries) sends the event back for redelivery, and the same alert is tried again later. Open
//! episodes live in memory: after a restart of the sink, an ongoing crash loop opens a new one.

mod config;
pub(crate) mod episode;
pub(crate) mod webhook;

use std::time::{Duration, SystemTime};

use episode::{Alert, Episodes};
use pc_eventd_events::consumer::{Consumer, ConsumerError, Durable, Filter};
use pc_eventd_events::event::LifecycleEvent;
use pc_eventd_events::nats::NatsConfig;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use webhook::{Webhook, WebhookError};

pub use config::AlertConfig;

/// Why alerting could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// `alert.url` is not set.
    #[error("alert.url: not set; pc-eventd alert needs the webhook's URL")]
    NoUrl,
    /// The webhook's URL cannot be used.
    #[error(transparent)]
    Webhook(WebhookError),
    /// Reading lifecycle events failed.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

impl AlertError {
    /// Whether the configuration is at fault (the command exits 78).
    pub fn is_config(&self) -> bool {
        matches!(self, Self::NoUrl | Self::Webhook(_))
    }
}

/// The episodes and where their alerts go.
struct Sink {
    webhook: Webhook,
    episodes: tokio::sync::Mutex<Episodes>,
}

impl Sink {
    /// Sends the alerts `event` causes; the episodes change only if all were delivered.
    async fn on_event(&self, event: LifecycleEvent) -> Result<(), WebhookError> {
        let mut episodes = self.episodes.lock().await;
        let mut next = episodes.clone();
        for alert in next.on_event(&event) {
            self.send(&alert).await?;
        }
        *episodes = next;
        Ok(())
    }

    /// Resolves quiet episodes every `every` until `stop`. A resolution that cannot be
    /// delivered is tried again at the next tick.
    async fn resolve_quiet(&self, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let mut episodes = self.episodes.lock().await;
            let mut next = episodes.clone();
            let mut delivered = true;
            for alert in next.resolve_quiet(SystemTime::now()) {
                if let Err(err) = self.send(&alert).await {
                    error!(error = %err, summary = %alert.summary, "cannot deliver a resolution; will retry");
                    delivered = false;
                    break;
                }
            }
            if delivered {
                *episodes = next;
            }
        }
    }

    async fn send(&self, alert: &Alert) -> Result<(), WebhookError> {
        let body = serde_json::to_vec(alert).expect("alerts always serialize");
        self.webhook.post(&body).await?;
        info!(
            alert = ?alert.alert,
            episode = %alert.episode,
            severity = ?alert.severity,
            summary = %alert.summary,
            output_lines = alert.output.as_ref().map_or(0, |o| o.lines.len()),
            "alert sent"
        );
        Ok(())
    }
}

/// `pc-eventd alert`: runs until `shutdown`.
/// `nats` is the daemon's connection (the stream of lifecycle events).
pub async fn run(
    settings: AlertConfig,
    nats: NatsConfig,
    shutdown: CancellationToken,
) -> Result<(), AlertError> {
    let url = settings.url.as_ref().ok_or(AlertError::NoUrl)?;
    let webhook = Webhook::new(url.expose(), &settings).map_err(AlertError::Webhook)?;
    let consumer = Consumer::connect(&nats).await?;
    let sink = Sink {
        webhook,
        episodes: tokio::sync::Mutex::new(Episodes::new(&settings)),
    };
    let filter = Filter {
        types: episode::read_types(&settings.types),
        ..Filter::default()
    };
    if !consumer.wait_for_stream(shutdown.cancelled()).await? {
        return Ok(());
    }
    let durable = Durable::new(settings.durable.clone());
    info!(durable = %durable.name, types = ?settings.types, read = ?filter.types, "alerting");
    let tick =
        (settings.quiet_period / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let (report, ()) = tokio::join!(
        consumer.run_durable(
            &durable,
            &filter,
            |event| sink.on_event(event),
            shutdown.clone().cancelled_owned()
        ),
        sink.resolve_quiet(tick, shutdown),
    );
    info!(report = ?report?, "alerting stopped");
    Ok(())
}
