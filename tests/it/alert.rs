//! `pc-eventd alert` against real peers and a local webhook receiver: one alert per crash-loop
//! episode (opened, escalated once, resolved), retried on a 500; a crash's alert with its last
//! output lines (redacted by the daemon), and a critical alert when process-compose gives up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pc_eventd_events::event::EventType::*;
use pc_eventd_events::event::GivenUpPolicy;
use pc_eventd_events::nats::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::Stack;
use crate::support::compose::Release;
use crate::support::events::count;

const LONG: Duration = Duration::from_secs(40);

/// What the receiver was sent: the status it answered, and the body.
type Calls = Arc<Mutex<Vec<(u16, serde_json::Value)>>>;

/// A webhook endpoint on loopback that answers 500 to its first `failures` calls, then 200.
async fn receiver(failures: usize) -> (String, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/secret-token",
        listener.local_addr().unwrap()
    );
    let calls: Calls = Arc::default();
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = recorded.clone();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let calls = calls.clone();
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    let mut calls = calls.lock().unwrap();
                    let status = if calls.len() < failures { 500 } else { 200 };
                    calls.push((status, serde_json::from_slice(&body).expect("JSON")));
                    Ok::<_, hyper::Error>(
                        hyper::Response::builder()
                            .status(status)
                            .body(http_body_util::Empty::<bytes::Bytes>::new())
                            .expect("a valid response"),
                    )
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_one_alert_per_episode_and_a_500_is_retried() {
    let mut stack = Stack::start_on(
        Release::Current,
        r#"
processes:
  flaky:
    command: "sleep 0.2; exit 3"
    disabled: true
    availability: { restart: on_failure, max_restarts: 5, backoff_seconds: 1 }
"#,
    )
    .await;
    let (url, calls) = receiver(1).await;
    let mut config = crate::support::daemon::config(&stack.pc.url(), &stack.nats_url());
    config.alert.url = Some(Secret::new(url));
    config.alert.types = vec![Crashed];
    config.alert.escalate_after = 3;
    config.alert.quiet_period = Duration::from_secs(3);
    config.alert.retry_backoff = Duration::from_millis(100);
    let sink = AlertSink::start(&config, &stack.nats_url()).await;
    stack.pc.start_process("flaky").await;

    let resolved = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .any(|(status, body)| *status == 200 && body["alert"] == "resolved")
    };
    assert!(
        crate::support::eventually(LONG, resolved).await,
        "no resolution: {:#?}",
        calls.lock().unwrap()
    );
    stack
        .log
        .wait_until("six crashes", LONG, |r| {
            count(r, Some("flaky"), Crashed) >= 6
        })
        .await;

    let calls = calls.lock().unwrap().clone();
    let summary: Vec<_> = calls
        .iter()
        .map(|(status, body)| {
            (
                *status,
                body["alert"].as_str().unwrap(),
                body["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (500, "opened", 1),
            (200, "opened", 1),
            (200, "escalated", 3),
            (200, "resolved", 6),
        ],
        "one episode, six crashes"
    );
    let episode = &calls[0].1["episode"];
    assert!(calls.iter().all(|(_, body)| &body["episode"] == episode));
    let last = &calls[3].1;
    assert_eq!(last["process"], "flaky");
    assert_eq!(last["type"], "crashed");
    assert_eq!(
        last["event"]["type"], "crashed",
        "the latest event rides along"
    );
    sink.stop().await;
    stack.stop().await;
}

/// Prints three lines (one with a secret) and exits 1; `restart: "no"`, so process-compose
/// gives up on it at once.
const LEAKY: &str = r#"
processes:
  leaky:
    command: "echo 'starting the worker'; echo 'login password=hunter2'; echo 'fatal: queue unreachable'; sleep 0.3; exit 1"
    disabled: true
    availability:
      restart: "no"
"#;

/// What `leaky` printed, as the daemon publishes it: the secret redacted by its default
/// patterns.
const LEAKY_OUTPUT: [&str; 3] = [
    "starting the worker",
    "login [REDACTED]",
    "fatal: queue unreachable",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_alert_carries_its_last_lines_and_giving_up_pages_critical() {
    let mut stack = Stack::start_on(Release::Current, LEAKY).await;
    let (url, calls) = receiver(0).await;
    let mut config = crate::support::daemon::config(&stack.pc.url(), &stack.nats_url());
    config.alert.url = Some(Secret::new(url));
    // The default types: crashed, unhealthy, given_up, resource_pressure, silent.
    config.alert.retry_backoff = Duration::from_millis(100);
    let sink = AlertSink::start(&config, &stack.nats_url()).await;
    stack.pc.start_process("leaky").await;

    // What the daemon published: the crash with its output, then the give-up.
    stack
        .log
        .wait_until("crashed and given_up", LONG, |r| {
            count(r, Some("leaky"), Crashed) == 1 && count(r, Some("leaky"), GivenUp) == 1
        })
        .await;
    let published = |event_type| {
        stack
            .log
            .received
            .iter()
            .find(|r| r.event.event_type == event_type)
            .map(|r| r.event.clone())
            .expect("published")
    };
    let crashed = published(Crashed);
    let output = crashed.output.expect("the crash carries its output");
    assert_eq!(output.lines, LEAKY_OUTPUT, "{output:?}");
    assert_eq!((output.redacted, output.truncated), (1, false));
    let given_up = published(GivenUp).given_up.expect("who gave up");
    assert_eq!(given_up.policy, GivenUpPolicy::No);

    let alert_of = |event_type: &str| {
        calls
            .lock()
            .unwrap()
            .iter()
            .find(|(_, body)| body["type"] == event_type && body["alert"] == "opened")
            .map(|(_, body)| body.clone())
    };
    assert!(
        crate::support::eventually(LONG, || alert_of("crashed").is_some()
            && alert_of("given_up").is_some())
        .await,
        "no crash or give-up alert: {:#?}",
        calls.lock().unwrap()
    );

    let crash = alert_of("crashed").unwrap();
    assert_eq!(crash["severity"], "error");
    assert_eq!(crash["output"]["lines"], serde_json::json!(LEAKY_OUTPUT));
    assert_eq!(crash["output"]["redacted"], 1);
    assert_eq!(crash["output"]["truncated"], false);
    let text = crash["text"].as_str().unwrap();
    assert!(
        text.starts_with(crash["summary"].as_str().unwrap()),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "\nlast output (1 redacted):\n  {}",
            LEAKY_OUTPUT.join("\n  ")
        )),
        "{text}"
    );
    assert!(
        crash["event"].get("output").is_none(),
        "the lines are sent once"
    );

    let up = alert_of("given_up").unwrap();
    assert_eq!(up["severity"], "critical");
    assert_ne!(up["episode"], crash["episode"], "an episode of its own");
    assert_eq!(up["event"]["given_up"]["policy"], "no");
    assert!(
        up["summary"]
            .as_str()
            .unwrap()
            .starts_with("default/leaky given_up at "),
        "{up}"
    );
    assert!(
        up["summary"]
            .as_str()
            .unwrap()
            .ends_with(": policy=no, restarts=0")
    );
    assert_eq!(
        up["output"]["lines"],
        serde_json::json!(LEAKY_OUTPUT),
        "the crash that made it give up"
    );
    assert!(
        up["text"]
            .as_str()
            .unwrap()
            .contains("fatal: queue unreachable")
    );

    let calls = calls.lock().unwrap().clone();
    let sent: Vec<_> = calls
        .iter()
        .map(|(status, body)| (*status, body["alert"].as_str(), body["type"].as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            (200, Some("opened"), Some("crashed")),
            (200, Some("opened"), Some("given_up"))
        ],
        "one alert each, in the stream's order"
    );
    for (_, body) in &calls {
        assert!(!body.to_string().contains("hunter2"), "{body}");
    }
    sink.stop().await;
    stack.stop().await;
}

/// `pc-eventd alert`, run in-process, once its durable consumer is there.
struct AlertSink {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pc_eventd::alert::AlertError>>,
}

impl AlertSink {
    async fn start(config: &pc_eventd::Config, nats_url: &str) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(pc_eventd::alert::run(
            config.alert.clone(),
            config.nats.clone(),
            stop.clone(),
        ));
        crate::support::wait_for_consumer(nats_url, &config.alert.durable, || task.is_finished())
            .await;
        Self { stop, task }
    }

    /// Stops it and checks that it ended without an error.
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}
