//! The dashboard in a real browser (Debian's chromium over WebDriver) against a real
//! `nats-server -js`, with the release binary's `pc-eventd dashboard`: how it holds up with
//! 1000 processes and 10 000 events.
//!
//! Run it through `scripts/bench.sh` (all benchmarks, docs/benchmarks.md rewritten) or
//! `scripts/bench.sh dashboard` (this one, printed). A measurement, not a test: nothing here
//! asserts on a time. The events are published straight to the stream with the library's
//! `Publisher`, as the daemon publishes them, so that their number and pace are the bench's.
//!
//! 1. First render: from the navigation to the end of the page's first render that lists all
//!    1000 processes (the feed's connection and snapshot included), by the page's own
//!    `performance.mark`.
//! 2. Latency: 200 events published one at a time, each timed from just before the publish to
//!    its row appearing in the timeline (a `MutationObserver` notes the wall-clock time).
//! 3. Memory: the page's JS heap (after a forced GC) and DOM size once it holds 10 000 events.

#![allow(dead_code)]

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pc_eventd_events::event::{EventType, LifecycleEvent, SubjectScheme, example_event, timestamp};
use pc_eventd_events::nats::NatsConfig;
use pc_eventd_events::publish::{Message, Publisher};
use serde_json::{Value, json};

use support::browser::Browser;
use support::nats::NatsServer;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PROCESSES: usize = 1000;
const NAMESPACES: usize = 10;
const LATENCY_EVENTS: usize = 200;
const MEMORY_EVENTS: usize = 10_000;

fn main() -> ExitCode {
    common::main_of("dashboard", run())
}

/// The event `n` of process `p`: its start, then restarts.
fn event(subjects: &SubjectScheme, p: usize, seq: u64) -> LifecycleEvent {
    let mut event = example_event();
    event.event_type = if seq == 1 {
        EventType::Started
    } else {
        EventType::Restarted
    };
    event.process = format!("proc-{p:04}");
    event.namespace = format!("ns-{}", p % NAMESPACES);
    event.source = "bench".into();
    event.seq = seq;
    event.restarts = (seq > 1).then_some(seq as u32 - 1);
    event.id = format!("bench-{p}-{seq}");
    event.timestamp = timestamp(SystemTime::now());
    event.subject = subjects.subject(
        &event.source,
        &event.namespace,
        &event.process,
        event.event_type,
    );
    event.state.name = event.process.clone();
    event.state.namespace = event.namespace.clone();
    event.state.namespaces = vec![event.namespace.clone()];
    event.state.restarts = seq as u32 - 1;
    event
}

fn epoch_ms(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

async fn run() -> Result<String> {
    let nats = NatsServer::start();
    let config = NatsConfig {
        url: nats.url(),
        ..NatsConfig::default()
    };
    let subjects = config.subjects();
    let publisher = Publisher::connect(&config, |_| {}).await?;
    publisher.ensure_stream(&config.stream).await?;
    let mut seqs = vec![0u64; PROCESSES];
    let mut next = |p: usize| {
        seqs[p] += 1;
        event(&subjects, p, seqs[p])
    };
    eprintln!("bench: dashboard: {PROCESSES} processes");
    let starts: Vec<Message> = (0..PROCESSES).map(|p| Message::of(&next(p))).collect();
    publish(&publisher, &starts).await?;

    let (mut dashboard, url) = start_dashboard(&nats.url())?;
    let browser = Browser::start().await;
    let first_render = first_render(&browser, &url).await?;

    eprintln!("bench: dashboard: latency of {LATENCY_EVENTS} events");
    browser
        .run(
            "window.__seen = {}; new MutationObserver(ms => { const at = performance.timeOrigin + performance.now(); \
             for (const m of ms) for (const n of m.addedNodes) if (n.dataset && n.dataset.id && !(n.dataset.id in window.__seen)) window.__seen[n.dataset.id] = at; })\
             .observe(document.getElementById('events'), { childList: true });",
            vec![],
        )
        .await;
    let mut latencies = Vec::new();
    for n in 0..LATENCY_EVENTS {
        let event = next(n * 7 % PROCESSES);
        let message = Message::of(&event);
        let sent = epoch_ms(SystemTime::now());
        publish(&publisher, std::slice::from_ref(&message)).await?;
        let script = format!("return window.__seen[{}] || null;", json!(event.id));
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            if let Value::Number(at) = browser.run(&script, vec![]).await {
                break at.as_f64().unwrap_or(f64::NAN);
            }
            if Instant::now() > deadline {
                return Err(format!("event {} never appeared", event.id).into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(seen - sent);
    }
    latencies.sort_by(f64::total_cmp);

    eprintln!("bench: dashboard: {MEMORY_EVENTS} events in the page");
    let shown_so_far = LATENCY_EVENTS;
    let batch: Vec<Message> = (0..MEMORY_EVENTS - shown_so_far)
        .map(|n| Message::of(&next(n % PROCESSES)))
        .collect();
    publish(&publisher, &batch).await?;
    let held = format!(
        "return /· (\\d+) events$/.exec(document.getElementById('counts').textContent)?.[1] >= {MEMORY_EVENTS};"
    );
    browser
        .wait_until("10 000 events", Duration::from_secs(120), &held)
        .await;
    let memory = browser
        .run(
            "window.gc && window.gc(); return [performance.memory.usedJSHeapSize, document.getElementsByTagName('*').length];",
            vec![],
        )
        .await;
    let heap_mib = memory[0].as_f64().unwrap_or(f64::NAN) / 1048576.0;
    let dom_nodes = memory[1].as_u64().unwrap_or(0);
    browser.screenshot("bench-10000-events").await;
    browser.close().await;
    let _ = dashboard.kill();
    let _ = dashboard.wait();

    let percentile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let chromium = Command::new(support::peer_binary("TEST_CHROMIUM"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Ok(format!(
        "\n### 6. The dashboard in a browser\n\n\
         `pc-eventd dashboard` (release build) in {chromium}, headless, 1400×1000, driven over \
         WebDriver; the events are published to a real nats-server with the library's \
         `Publisher`, {PROCESSES} processes in {NAMESPACES} namespaces.\n\n\
         | measure | result | target |\n|---|---|---|\n\
         | first render of {PROCESSES} processes (navigation → all rows in the DOM) | {first_render:.0} ms | ≤ 1000 ms |\n\
         | event published → its row in the DOM, p50 ({LATENCY_EVENTS} events, one at a time) | {:.1} ms | |\n\
         | event published → its row in the DOM, p99 | {:.1} ms | ≤ 100 ms |\n\
         | the page's JS heap holding {MEMORY_EVENTS} events (after a GC) | {heap_mib:.1} MiB | |\n\
         | DOM elements then (200 timeline rows are shown, the rest kept in memory) | {dom_nodes} | |\n",
        percentile(0.5),
        percentile(0.99),
    ))
}

/// Publishes `messages` in order, all acknowledged.
async fn publish(publisher: &Publisher, messages: &[Message]) -> Result<()> {
    let refs: Vec<&Message> = messages.iter().collect();
    match publisher.publish_batch(&refs, 256).await.error {
        None => Ok(()),
        Some(err) => Err(err.into()),
    }
}

/// The release binary's dashboard on a free loopback port, and its URL.
fn start_dashboard(nats_url: &str) -> Result<(Child, String)> {
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pc-eventd"))
        .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--nats-url", nats_url])
        .env("PC_EVENTD_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    Ok((child, format!("http://127.0.0.1:{port}/")))
}

/// Milliseconds from the navigation to all processes listed, as the page measures them.
async fn first_render(browser: &Browser, url: &str) -> Result<f64> {
    // The dashboard may still be binding its port.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(url.trim_start_matches("http://").trim_end_matches('/'))
        .is_err()
    {
        if Instant::now() > deadline {
            return Err("the dashboard never listened".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("bench: dashboard: first render");
    browser.client.goto(url).await?;
    // The page marks the end of each render with its number of rows: the first with all.
    let rendered = browser
        .client
        .execute_async(
            &format!(
                "const done = arguments[0]; (function check() {{ \
                 const all = performance.getEntriesByName('rendered').find(m => m.detail.rows >= {PROCESSES}); \
                 if (all) done(all.startTime); else setTimeout(check, 10); }})();"
            ),
            vec![],
        )
        .await?;
    browser.screenshot("bench-1000-processes").await;
    Ok(rendered.as_f64().unwrap_or(f64::NAN))
}
