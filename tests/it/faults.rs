//! What the real process-compose will not do on demand: 5xx, garbage, truncation, resets,
//! stalls, refusals. A fake answers with a script; the daemon must log, count and carry on.

use std::time::Duration;

use pc_eventd::config::SourceMode;
use pc_eventd::event::EventType::*;
use tokio::net::TcpListener;

use crate::support::daemon::{Daemon, config};
use crate::support::events::EventLog;
use crate::support::fake_compose::{HEALTHY_BODY, Reply, serve};
use crate::support::nats::NatsServer;
use crate::support::{eventually, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_counted_and_survived() {
    let nats = NatsServer::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        vec![
            Reply::Json(500, r#"{"error":"boom"}"#),
            Reply::Json(200, "this is not JSON"),
            Reply::Json(200, r#"{"data":[{"name":"web","restarts":"many"}]}"#),
            Reply::Truncated(r#"{"data":[{"name":"web","status":"Runn"#),
            Reply::Reset,
            Reply::Stall,
            Reply::Json(200, HEALTHY_BODY),
        ],
    ));
    let mut config = config(&url, &nats.url());
    config.process_compose.request_timeout = Duration::from_millis(500);
    config.process_compose.mode = SourceMode::Poll;
    let daemon = Daemon::spawn(config);
    let mut log = EventLog::open(&nats.url()).await;
    let started = log.wait_for("web", Started).await;
    assert_eq!(started.state.pid, 4242);

    let stats = &daemon.status;
    assert_eq!(
        stats.metrics.poll_errors_total(),
        6,
        "each bad answer counted once"
    );
    assert_eq!(
        stats.metrics.malformed_responses.get(),
        2,
        "garbage and a wrong type"
    );
    assert!(stats.metrics.polls.get() >= 1);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_until_process_compose_appears() {
    let nats = NatsServer::start();
    let port = free_port();
    let mut config = config(&format!("http://127.0.0.1:{port}"), &nats.url());
    config.process_compose.mode = SourceMode::Poll;
    let daemon = Daemon::spawn(config);
    let stats = daemon.status.clone();
    assert!(
        eventually(Duration::from_secs(20), || stats
            .metrics
            .poll_errors_total()
            >= 2)
        .await
    );

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(serve(listener, vec![Reply::Json(200, HEALTHY_BODY)]));
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("web", Started).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_what_went_wrong() {
    let nats = NatsServer::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener, vec![Reply::Json(200, "<html>oops</html>")]));
    let mut daemon = crate::cli::Binary::spawn_with_env(
        &[
            "run",
            "--compose-port",
            &port.to_string(),
            "--nats-url",
            &nats.url(),
            "--poll-interval",
            "100ms",
        ],
        &[("PC_EVENTD_PROCESS_COMPOSE__MODE", "poll")],
    );
    let line = daemon
        .stderr_line_containing("process-compose unavailable", Duration::from_secs(20))
        .await;
    assert!(line.contains("malformed"), "{line}");
    assert_eq!(daemon.terminate().await, Some(0));
}
