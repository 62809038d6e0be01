//! The `[alert]` section: the webhook and how alerts are grouped.

use std::time::Duration;

use pc_eventd_events::consumer::Durable;
use pc_eventd_events::event::EventType;
use pc_eventd_events::nats::Secret;
use serde::{Deserialize, Serialize};

/// `pc-eventd alert`: the webhook and how alerts are grouped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// The webhook (http:// or https://). A secret: such URLs often carry a token, so logs and
    /// `config check` show only its scheme and host.
    pub url: Option<Secret>,
    /// The event types that alert. What ends a condition among them is read too
    /// (`resource_recovered` for `resource_pressure`, `output_resumed` for `silent`, `started`
    /// and `restarted` for `given_up`); empty: every type.
    pub types: Vec<pc_eventd_events::event::EventType>,
    /// The durable consumer's name: alerting resumes where it stopped.
    pub durable: String,
    /// Events in one episode that make it escalate (once).
    pub escalate_after: u32,
    /// An episode is resolved after this long without another event of its kind.
    #[serde(with = "humantime_serde")]
    pub quiet_period: Duration,
    /// Longest wait for the webhook to answer one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed call (connection error, timeout, 5xx, 408, 429), waits doubling.
    pub retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// At most this many bytes of a crash's last output lines in one alert, the newest kept;
    /// 0: no output in alerts. Bounds the webhook's body, whatever the daemon's
    /// `crash_output.max_bytes`.
    pub output_max_bytes: usize,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            url: None,
            types: vec![
                EventType::Crashed,
                EventType::Unhealthy,
                EventType::GivenUp,
                EventType::ResourcePressure,
                EventType::Silent,
            ],
            durable: "pc-eventd-alert".into(),
            escalate_after: 5,
            quiet_period: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            retries: 3,
            retry_backoff: Duration::from_secs(1),
            output_max_bytes: 4096,
        }
    }
}

impl AlertConfig {
    /// What is wrong in this section, as (key, message); empty when nothing is.
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let url_ok = self.url.as_ref().is_none_or(|url| {
            url.expose().parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            })
        });
        let rules = [
            (
                "url",
                url_ok,
                "expected an http:// or https:// URL (value not shown)",
            ),
            (
                "quiet_period",
                !self.quiet_period.is_zero() && !self.timeout.is_zero(),
                "quiet_period and timeout must be greater than zero",
            ),
            (
                "durable",
                Durable::is_valid_name(&self.durable),
                Durable::NAME_RULE,
            ),
        ];
        rules
            .into_iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(key, _, message)| (key.to_owned(), message))
            .collect()
    }
}
