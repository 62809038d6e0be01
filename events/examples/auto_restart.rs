//! The seed's auto-remediation: restart a crashed process through process-compose's API, at most
//! 3 times per process.
//!
//! It runs as the durable consumer `auto-restart`, so a crash that happens while it is down is
//! handled when it comes back, and every crash is handled once: a restart request that fails is
//! retried with backoff, and one that still fails after 4 tries is parked on
//! `pc-eventd.parked.auto-restart` instead of being retried for ever. `pc-eventd remediate` is
//! the same job with a policy that survives its own restarts.
//!
//! ```sh
//! cargo run -p pc-eventd-events --features process-compose --example auto_restart -- \
//!     --nats-url nats://127.0.0.1:4222 --compose-url http://127.0.0.1:8080 [--process fragile] \
//!     [--source web-01]
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pc_eventd_events::consumer::{Consumer, Durable, Filter};
use pc_eventd_events::event::{EventType, LifecycleEvent};
use pc_eventd_events::process_compose::{ComposeClient, ComposeError, Endpoint};

/// Restarts per process before it is left crashed.
const MAX_RESTARTS: u32 = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nats_url = flag("--nats-url").unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let compose_url = flag("--compose-url").unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let compose = ComposeClient::new(
        Endpoint::from_url(&compose_url)?,
        None,
        Duration::from_secs(5),
    );
    let consumer = Consumer::connect_url(&nats_url).await?;

    let mut filter = Filter::default().with_type(EventType::Crashed);
    // NAME or NAMESPACE/NAME; every process without it.
    filter.process = flag("--process");
    // When many hosts publish into the stream, the events of the host whose process-compose
    // this restarts (its daemon's process_compose.source): another host's `web` is not ours.
    filter.source = flag("--source");
    let mut durable = Durable::new("auto-restart");
    durable.max_deliver = 4;
    durable.backoff = vec![Duration::from_secs(1), Duration::from_secs(5)];
    durable.park_subject = Some("pc-eventd.parked.auto-restart".into());

    let restarts: Mutex<HashMap<String, u32>> = Mutex::default();
    let (compose, restarts) = (&compose, &restarts);
    let handler = |event: LifecycleEvent| async move {
        let key = format!("{}/{}", event.namespace, event.process);
        let count = restarts.lock().unwrap().get(&key).copied().unwrap_or(0);
        if count >= MAX_RESTARTS {
            eprintln!("{key} crashed too many times, giving up");
            return Ok::<(), ComposeError>(());
        }
        eprintln!("restarting {key} (attempt {}/{MAX_RESTARTS})", count + 1);
        compose.restart(&event.process).await?;
        *restarts.lock().unwrap().entry(key).or_default() += 1;
        Ok(())
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = consumer
        .run_durable(&durable, &filter, handler, stop)
        .await?;
    eprintln!("stopped: {report:?}");
    Ok(())
}

/// The value after `name` on the command line.
fn flag(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|arg| arg != name);
    args.next().and(args.next())
}
