//! Prints every `crashed` event as it happens: the smallest consumer of pc-eventd's events (the
//! seed's first example).
//!
//! ```sh
//! cargo run -p pc-eventd-events --example crash_printer -- --nats-url nats://127.0.0.1:4222 [--since 1h]
//! ```

use std::time::SystemTime;

use futures::StreamExt;
use pc_eventd_events::consumer::{Consumer, Filter, Received, Start};
use pc_eventd_events::event::EventType;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nats_url = flag("--nats-url").unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    // With --since DURATION (e.g. 1h), the crashes stored in that time come first.
    let start = match flag("--since") {
        Some(since) => Start::Since(SystemTime::now() - humantime::parse_duration(&since)?),
        None => Start::New,
    };
    let consumer = Consumer::connect_url(&nats_url).await?;
    let filter = Filter::default().with_type(EventType::Crashed);
    let mut crashes = consumer.subscribe(&filter, start).await?;
    eprintln!("waiting for crashes on {nats_url}");
    while let Some(received) = crashes.next().await {
        let event = match received? {
            Received::Event(delivery) => delivery.event,
            // The daemon had to drop events: some crashes may be missing here.
            Received::EventsLost(marker) => {
                println!("{marker}");
                continue;
            }
        };
        let exit = event.exit_code.map_or("?".into(), |c| c.to_string());
        println!(
            "{} {}/{} crashed with exit code {exit} (restarts so far: {})",
            event.timestamp, event.namespace, event.process, event.state.restarts
        );
    }
    Ok(())
}

/// The value after `name` on the command line.
fn flag(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|arg| arg != name);
    args.next().and(args.next())
}
