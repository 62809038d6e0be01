//! Prints every `crashed` event as it happens: the smallest consumer of pc-eventd's events.
//!
//! ```sh
//! cargo run --example crash_printer -- --nats-url nats://127.0.0.1:4222 [--since 1h]
//! ```

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use clap::Parser;
use futures::StreamExt;
use pc_eventd::consumer::{Consumer, Filter, Start};
use pc_eventd::event::EventType;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Also print the crashes stored in the last DURATION (e.g. 1h)
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let start = match args.since {
        Some(since) => Start::Since(SystemTime::now() - since),
        None => Start::New,
    };
    let consumer = Consumer::connect_url(&args.nats_url).await?;
    let filter = Filter::default().with_type(EventType::Crashed);
    let mut crashes = consumer.subscribe(&filter, start).await?;
    eprintln!("waiting for crashes on {}", args.nats_url);
    while let Some(delivery) = crashes.next().await {
        let event = delivery?.event;
        let exit = event.exit_code.map_or("?".into(), |c| c.to_string());
        println!(
            "{} {}/{} crashed with exit code {exit} (restarts so far: {})",
            event.timestamp, event.namespace, event.process, event.state.restarts
        );
    }
    Ok(())
}
