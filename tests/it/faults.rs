//! What the real process-compose will not do on demand: 5xx, garbage, truncation, resets,
//! stalls, refusals. A fake answers with a script; the daemon must log, count and carry on.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use pc_eventd::SourceMode;
use pc_eventd_events::event::EventType::*;
use tokio::net::TcpListener;

use crate::support::daemon::{Daemon, config};
use crate::support::events::EventLog;
use crate::support::events::Reliability;
use crate::support::fake_compose::{HEALTHY_BODY, Reply, serve};
use crate::support::fleet::{Hub, LeafNode};
use crate::support::nats::NatsServer;
use crate::support::{eventually, free_port, jetstream_at, retry_until_ok};

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
            // past the 32 MiB limit: refused without reading it all
            Reply::Huge(64 * 1024 * 1024),
            // a body that trickles in slower than the request timeout
            Reply::Drip,
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
        8,
        "each bad answer counted once"
    );
    let kind = |kind: &str| {
        let label = pc_eventd::KindLabel { kind: kind.into() };
        stats.metrics.poll_errors.get_or_create(&label).get()
    };
    assert_eq!(kind("too_large"), 1);
    assert_eq!(kind("timeout"), 2, "the stall and the drip");
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
    let mut daemon = crate::support::binary::Binary::spawn_with_env(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_delays_events_without_losing_reordering_or_repeating_them() {
    let mut nats = NatsServer::start();
    let pc = crate::support::compose::ProcessCompose::start(
        r#"
processes:
  flaky:
    command: "sleep 0.3; exit 5"
    availability:
      restart: on_failure
      max_restarts: 6
      backoff_seconds: 1
"#,
    )
    .await;
    let daemon = Daemon::spawn(config(&pc.url(), &nats.url()));
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("flaky", Crashed).await;
    nats.stop();
    // the crash loop goes on while NATS is away
    let stats = daemon.status.clone();
    assert!(
        crate::support::eventually(Duration::from_secs(20), || stats
            .metrics
            .publish_errors
            .get()
            >= 2)
        .await
    );
    nats.restart();
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_until("the final crash", Duration::from_secs(30), |r| {
        r.iter()
            .any(|r| r.event.event_type == Crashed && r.event.state.status == "Completed")
    })
    .await;
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    assert_eq!(
        log.of("flaky", Crashed).len(),
        7,
        "7 runs, 7 crashes:\n{}",
        log.dump()
    );
    assert_eq!(log.of("flaky", Restarted).len(), 6, "{}", log.dump());
    let row = log.report(
        "nats-server stopped during a crash loop (7 crashes, 6 restarts)",
        13,
        |e| matches!(e.event_type, Crashed | Restarted),
    );
    assert_eq!(row, Reliability::exact(13));
    let ids: std::collections::HashSet<_> = log.received.iter().map(|r| &r.event.id).collect();
    assert_eq!(ids.len(), log.received.len(), "no event stored twice");
    let seqs: Vec<u64> = log.received.iter().map(|r| r.event.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "stream order is event order: {seqs:?}"
    );
}

/// How long the hub may take, on a loaded 2-core machine, to serve the stream again after losing
/// a node: nats-server's election timeout (4 to 9 s) for what the node led, the relay's next
/// retry (within a second), and 2 s for each request the reader sent into the election
/// (docs/reliability.md, "The election delay"). About three times the longest wait seen.
const ELECTIONS: Duration = Duration::from_secs(30);

/// The shipped nats-server files (packaging/nats/), no daemon: JetStream through a leaf node
/// reaches the hub's R3 stream, which keeps its messages and takes more when the node leading it
/// is killed, when the leaf node restarts, and once the killed node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_nodes_publishes_are_kept_by_the_hubs_r3_stream_through_kills_and_restarts() {
    let mut hub = Hub::start().await;
    let mut leaf = LeafNode::start(&hub, "host-1").await;
    let host = jetstream_at(&leaf.url()).await;
    // JetStream's API through the leaf node: the stream is the hub's
    host.create_stream(stream::Config {
        name: "HOSTS".into(),
        subjects: vec!["hosts.>".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("create the stream through the leaf node");
    assert_eq!(publish_until_acked(&host, "hosts.first").await, 1);

    let cluster = get_stream_info(&jetstream_at(&hub.url(0)).await)
        .await
        .cluster
        .expect("a clustered stream");
    assert_eq!(cluster.replicas.len(), 2, "a leader and two replicas");
    let leader = cluster.leader.expect("a stream leader");
    let leader = hub.index_of(&leader).expect("a hub node leads");
    hub.kill(leader);
    assert_eq!(publish_until_acked(&host, "hosts.second").await, 2);

    leaf.kill();
    leaf.restart().await;
    assert_eq!(publish_until_acked(&host, "hosts.third").await, 3);

    hub.restart(leader).await;
    let back = jetstream_at(&hub.url(leader)).await;
    assert_eq!(get_stream_info(&back).await.state.messages, 3);
    let stream = back.get_stream("HOSTS").await.expect("the stream");
    for (sequence, subject) in [(1, "hosts.first"), (2, "hosts.second"), (3, "hosts.third")] {
        let message = stream.get_raw_message(sequence).await.expect("stored");
        assert_eq!(message.subject.as_str(), subject);
    }
}

/// Publishes to `subject` (its own message id) until JetStream acknowledges it, for up to
/// [`ELECTIONS`]; returns the stream sequence. Repeats are stored once.
async fn publish_until_acked(js: &jetstream::Context, subject: &str) -> u64 {
    let what = format!("{subject} acknowledged");
    retry_until_ok(ELECTIONS, &what, || async {
        let message = jetstream::message::PublishMessage::build()
            .payload(subject.as_bytes().to_vec().into())
            .message_id(subject);
        js.send_publish(subject.to_owned(), message).await?.await
    })
    .await
    .sequence
}

/// Stream `HOSTS`'s info, asked until a leader answers (up to [`ELECTIONS`]).
async fn get_stream_info(js: &jetstream::Context) -> stream::Info {
    retry_until_ok(ELECTIONS, "stream HOSTS's info", || async {
        let info: Result<stream::Info, async_nats::Error> = js
            .get_stream("HOSTS")
            .await?
            .info()
            .await
            .cloned()
            .map_err(Into::into);
        info
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_with_r3_loses_nothing_when_a_node_dies() {
    let mut hub = Hub::start().await;
    let pc = crate::support::compose::ProcessCompose::start(
        r#"
processes:
  a:
    command: "sleep 0.3; exit 6"
    disabled: true
    availability: { restart: on_failure, max_restarts: 4, backoff_seconds: 1 }
  b:
    command: "sleep 0.4; exit 6"
    disabled: true
    availability: { restart: on_failure, max_restarts: 4, backoff_seconds: 1 }
  c:
    command: "sleep 0.5; exit 6"
    disabled: true
    availability: { restart: on_failure, max_restarts: 4, backoff_seconds: 1 }
"#,
    )
    .await;
    let mut config = config(&pc.url(), &hub.urls());
    config.nats.stream.replicas = 3;
    let daemon = Daemon::spawn(config);
    // read through a node that stays up
    let mut log = EventLog::open_within(&hub.url(2), "PROCESS_EVENTS", ELECTIONS).await;
    // the daemon watches before anything runs
    log.wait_until("three disabled processes announced", ELECTIONS, |r| {
        r.iter()
            .filter(|r| r.event.state.status == "Disabled")
            .count()
            == 3
    })
    .await;
    for name in ["a", "b", "c"] {
        pc.start_process(name).await;
    }
    log.wait_for("a", Crashed).await;
    hub.kill(0);
    for name in ["a", "b", "c"] {
        pc.wait_for_status(name, "Completed", Duration::from_secs(60))
            .await;
    }
    // A fresh reader, so that what is checked is the stream, not how the first reader's
    // consumer rode out the lost node.
    let mut log = EventLog::open_within(&hub.url(2), "PROCESS_EVENTS", ELECTIONS).await;
    log.wait_until("every final crash", ELECTIONS, |r| {
        r.iter()
            .filter(|r| r.event.event_type == Crashed && r.event.state.status == "Completed")
            .count()
            == 3
    })
    .await;
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    for name in ["a", "b", "c"] {
        assert_eq!(
            log.of(name, Crashed).len(),
            5,
            "{name}: 5 runs, 5 crashes\n{}",
            log.dump()
        );
        assert_eq!(log.of(name, Restarted).len(), 4, "{}", log.dump());
    }
    let row = log.report(
        "3-node cluster, R3 stream, one node killed during 3 crash loops",
        27,
        |e| matches!(e.event_type, Crashed | Restarted),
    );
    assert_eq!(row, Reliability::exact(27));
    let ids: std::collections::HashSet<_> = log.received.iter().map(|r| &r.event.id).collect();
    assert_eq!(ids.len(), log.received.len(), "no event stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_loudly_and_puts_a_loss_marker_on_the_bus() {
    let mut nats = NatsServer::start();
    let pc = crate::support::compose::ProcessCompose::start(
        r#"
processes:
  flaky:
    command: "sleep 0.2; exit 5"
    availability:
      restart: on_failure
      max_restarts: 8
      backoff_seconds: 1
"#,
    )
    .await;
    let mut config = config(&pc.url(), &nats.url());
    // Room for a few events (about 1 KiB each), not for a crash loop.
    config.outbox.max_bytes = 6 * 1024;
    let daemon = Daemon::spawn(config);
    let stats = daemon.status.clone();
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("flaky", Crashed).await;
    nats.stop();
    assert!(
        eventually(Duration::from_secs(30), || stats
            .metrics
            .events_dropped
            .get()
            > 0)
        .await,
        "the crash loop overflows the outbox"
    );
    let failing = stats.readiness().failing();
    assert!(
        failing
            .get("outbox")
            .is_some_and(|e| e.contains("events lost")),
        "readiness says so: {failing:?}"
    );
    pc.wait_for_status("flaky", "Completed", Duration::from_secs(30))
        .await;

    nats.restart();
    let mut log = EventLog::open(&nats.url()).await;
    let marker = log.wait_for_loss(Duration::from_secs(30)).await;
    // Usually one episode; a last frame that arrives just after the first marker took the room
    // may open a second. Either way the markers add up to exactly what was dropped.
    assert!(
        eventually(Duration::from_secs(10), || stats.readiness().outbox.is_ok()).await,
        "readiness recovers once the marker is queued"
    );
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    let announced: u64 = log.losses.iter().map(|l| l.lost).sum();
    assert_eq!(
        announced,
        stats.metrics.events_dropped.get(),
        "{:?}",
        log.losses
    );
    let ids: std::collections::HashSet<_> = log.losses.iter().map(|l| &l.id).collect();
    assert_eq!(ids.len(), log.losses.len(), "one marker per episode");
    let row = log.report(
        "outbox full (6 KiB) while NATS is down for a crash loop (9 crashes, 8 restarts)",
        17,
        |e| matches!(e.event_type, Crashed | Restarted),
    );
    // Some crashes and restarts were dropped, none twice, and the markers count every one of
    // them (and the dropped status changes besides).
    assert_eq!(row.duplicates, 0);
    assert!(row.lost > 0, "{row:?}");
    assert_eq!(row.delivered + row.lost, 17);
    assert!(row.lost as u64 <= row.marked_lost, "{row:?}");
    assert_eq!(marker.reason, "outbox_full");
    assert_eq!(marker.source, "test");
    assert!(marker.first_lost_at <= marker.last_lost_at);
    // `watch` shows the gap where it is, as loudly as a crash.
    let mut watch =
        crate::support::binary::Binary::spawn(&["watch", "--all", "--nats-url", &nats.url()]);
    let lines = watch
        .stdout_until(Duration::from_secs(20), |l| {
            l.iter().any(|l| l.contains("were lost"))
        })
        .await;
    let expected = format!(
        "ERROR {} events of test were lost between {} and {} (outbox_full)",
        marker.lost, marker.first_lost_at, marker.last_lost_at
    );
    assert!(lines.iter().any(|l| l.ends_with(&expected)), "{lines:?}");
    assert_eq!(watch.terminate().await, Some(0));
}
