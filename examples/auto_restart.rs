//! The seed's auto-restart consumer: on `crashed`, ask process-compose to restart the process
//! (`POST /process/restart/{name}`).
//!
//! It runs as the durable consumer `auto-restart`, so a crash that happens while it is down is
//! handled when it comes back, and every crash is handled once: a restart that fails is retried
//! with backoff, and one that still fails after 4 tries is parked on
//! `pc-eventd.parked.auto-restart` instead of being retried for ever.
//!
//! ```sh
//! cargo run --example auto_restart -- --nats-url nats://127.0.0.1:4222 \
//!     --compose-url http://127.0.0.1:8080 [--process fragile]
//! ```

use std::io::IsTerminal;
use std::time::Duration;

use clap::Parser;
use pc_eventd::compose::ComposeClient;
use pc_eventd::config::Config;
use pc_eventd::consumer::{Consumer, Durable, Filter};
use pc_eventd::event::EventType;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    compose_url: String,
    /// Only this process (NAME or NAMESPACE/NAME); default: every process
    #[arg(long)]
    process: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let mut config = Config::default();
    config.nats.url = args.nats_url;
    config.process_compose.url = args.compose_url;
    let compose = ComposeClient::from_config(&config)?;
    let consumer = Consumer::connect(&config.nats).await?;

    let mut filter = Filter::default().with_type(EventType::Crashed);
    filter.process = args.process;
    let mut durable = Durable::new("auto-restart");
    durable.max_deliver = 4;
    durable.backoff = vec![Duration::from_secs(1), Duration::from_secs(5)];
    durable.park_subject = Some("pc-eventd.parked.auto-restart".into());

    let compose = &compose;
    let handler = |event: pc_eventd::event::LifecycleEvent| async move {
        tracing::info!(process = %event.process, exit_code = ?event.exit_code, "crashed: restarting");
        compose.restart(&event.process).await
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = consumer
        .run_durable(&durable, &filter, handler, stop)
        .await?;
    tracing::info!(?report, "stopped");
    Ok(())
}
