//! Reloading (SIGHUP): read the configuration again, and swap only what changed.

use pc_eventd_events::nats::{NatsConfig, StreamConfig};
use pc_eventd_events::process_compose::ComposeClient;
use pc_eventd_events::publish::Publisher;
use tracing::{error, info};

use super::{Daemon, DaemonError, HealthServer, start_health};
use crate::config::{Config, ConfigError};
use crate::ops::notify;

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Changed {
    nats: bool,
    /// The stream's settings: it must be made right again before events flow.
    pub(super) stream: bool,
    health: bool,
    log_level: bool,
}

impl Changed {
    fn between(old: &Config, new: &Config) -> Self {
        // Everything about the connection: servers, timeouts, credentials, TLS. Files named
        // there (seed, creds, certificates) may have been rotated in place, so a reload with
        // any of them set reconnects to read them again.
        let connection = |nats: &NatsConfig| NatsConfig {
            subject_prefix: String::new(),
            stream: StreamConfig::default(),
            ..nats.clone()
        };
        let n = &new.nats;
        let reads_files = n.nkey_seed_file.is_some()
            || n.creds_file.is_some()
            || n.tls_ca_file.is_some()
            || n.tls_cert_file.is_some();
        let nats = connection(&old.nats) != connection(n) || reads_files;
        Self {
            nats,
            // A new connection re-checks the stream too; so does a new subject prefix.
            stream: nats
                || old.nats.stream != new.nats.stream
                || old.nats.subject_prefix != new.nats.subject_prefix,
            health: old.health != new.health,
            log_level: old.log.level != new.log.level,
        }
    }
}

impl Daemon {
    /// Re-reads the configuration and applies what changed; a bad one keeps the old.
    pub(super) async fn reload(
        &mut self,
        compose: &mut ComposeClient,
        publisher: &mut Publisher,
        health: &mut Option<HealthServer>,
    ) -> Changed {
        notify::reloading();
        let changed = match self.apply_reload(compose, publisher, health).await {
            Ok(changed) => {
                info!(?changed, "configuration reloaded");
                self.status.metrics.reloaded(true);
                self.status.set_reload_error(None);
                changed
            }
            Err(err) => {
                error!(error = %err, "reload failed, the running configuration stays in force");
                self.status.metrics.reloaded(false);
                let first = err
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                self.status.set_reload_error(Some(first));
                Changed::default()
            }
        };
        notify::ready(&self.status.summary());
        changed
    }

    async fn apply_reload(
        &mut self,
        compose: &mut ComposeClient,
        publisher: &mut Publisher,
        health: &mut Option<HealthServer>,
    ) -> Result<Changed, DaemonError> {
        let new = (self.loader)()?;
        let old = std::mem::replace(&mut self.config, new.clone());
        let result = async {
            let changed = Changed::between(&old, &new);
            // Build everything that can fail before replacing anything.
            let new_compose = new.process_compose.client().map_err(ConfigError::from)?;
            let new_publisher = if changed.nats {
                Some(self.connect().await?)
            } else {
                None
            };
            // The new endpoint binds while the old one still serves (a changed address, or
            // one of them disabled, so the two never want the same port).
            let new_health = if changed.health {
                Some(start_health(&new.health, &self.status).await?)
            } else {
                None
            };
            *compose = new_compose;
            if let Some(new_publisher) = new_publisher {
                *publisher = new_publisher;
            }
            if let Some(new_health) = new_health
                && let Some(old_health) = std::mem::replace(health, new_health)
            {
                old_health.stop.cancel();
                let _ = old_health.task.await;
            }
            if changed.log_level
                && let Some(log) = &self.log
            {
                log.set_level(&new.log.level);
            }
            let mut settings = self.settings();
            settings.fixed_readiness_grace = new.process_compose.readiness_grace;
            settings.conditions = new.conditions.clone();
            drop(settings);
            Ok(changed)
        }
        .await;
        if result.is_err() {
            self.config = old;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reloads_reconnect_only_what_changed() {
        let old = Config::default();
        let mut new = old.clone();
        new.process_compose.poll_interval = Duration::from_millis(300);
        let changed = Changed::between(&old, &new);
        assert!(!changed.nats && !changed.stream && !changed.health && !changed.log_level);

        new.nats.stream.max_age = Duration::from_secs(60);
        let changed = Changed::between(&old, &new);
        assert!(changed.stream && !changed.nats);

        new.nats.url = "nats://127.0.0.1:4333".into();
        new.log.level = "debug".into();
        let changed = Changed::between(&old, &new);
        assert!(changed.nats && changed.stream && changed.log_level && !changed.health);

        let mut credentials = old.clone();
        credentials.nats.user = Some("events".into());
        assert!(Changed::between(&old, &credentials).nats);
        let mut rotated = old.clone();
        rotated.nats.tls_ca_file = Some("/etc/pc-eventd/ca.pem".into());
        assert!(
            Changed::between(&rotated, &rotated).nats,
            "files are read again"
        );
    }
}
