//! What the real process-compose will not do on demand: 5xx, garbage, truncation, resets,
//! stalls, refusals. A fake answers with a script; the daemon must log, count and carry on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pc_eventd::event::EventType::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::daemon::{Daemon, config};
use crate::support::events::EventLog;
use crate::support::nats::NatsServer;
use crate::support::{eventually, free_port};

const HEALTHY_BODY: &str = r#"{"data":[{"name":"web","namespace":"default","status":"Running","is_ready":"-","restarts":0,"exit_code":0,"pid":4242,"is_running":true}]}"#;

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    Json(u16, &'static str),
    /// Promise more bytes than are sent, then close.
    Truncated(&'static str),
    /// Close without answering.
    Reset,
    /// Never answer.
    Stall,
}

/// Serves `script` in order, then repeats its last reply for ever.
async fn serve(listener: TcpListener, script: Vec<Reply>) {
    let served = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let n = served.fetch_add(1, Ordering::SeqCst);
        let reply = script[n.min(script.len() - 1)].clone();
        tokio::spawn(answer(stream, reply));
    }
}

async fn answer(mut stream: TcpStream, reply: Reply) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body, length) = match reply {
        Reply::Json(status, body) => (status, body, body.len()),
        Reply::Truncated(body) => (200, body, body.len() + 100),
        Reply::Reset => return,
        Reply::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}

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
    let daemon = Daemon::spawn(config(&format!("http://127.0.0.1:{port}"), &nats.url()));
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
    let mut daemon = crate::cli::Binary::spawn(&[
        "run",
        "--compose-port",
        &port.to_string(),
        "--nats-url",
        &nats.url(),
        "--poll-interval",
        "100ms",
    ]);
    let line = daemon
        .stderr_line_containing("poll failed", Duration::from_secs(20))
        .await;
    assert!(line.contains("malformed"), "{line}");
    assert_eq!(daemon.terminate().await, Some(0));
}
