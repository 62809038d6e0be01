//! Stream mode: process-compose's WebSocket state stream, every step as it happens.

use std::time::Duration;

use pc_eventd::SourceMode;
use pc_eventd_events::event::EventType::*;
use pc_eventd_events::event::Reason;

use crate::support::compose::{Options, ProcessCompose, Release};
use crate::support::daemon::{Daemon, config};
use crate::support::events::{EventLog, Reliability, count};
use crate::support::nats::NatsServer;
use crate::support::{eventually, wait_for_http};

const LONG: Duration = Duration::from_secs(30);

/// nats-server, process-compose running `project`, and a daemon in `mode`.
async fn start(project: &str, mode: SourceMode) -> (NatsServer, ProcessCompose, Daemon, EventLog) {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(project).await;
    let mut config = config(&pc.url(), &nats.url());
    config.process_compose.mode = mode;
    let daemon = Daemon::spawn(config);
    let log = EventLog::open(&nats.url()).await;
    (nats, pc, daemon, log)
}

fn mode_is(daemon: &Daemon, mode: &str) -> bool {
    let label = pc_eventd::ModeLabel { mode: mode.into() };
    daemon
        .status
        .metrics
        .source_mode
        .get_or_create(&label)
        .get()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_kills_the_process_is_stopped_not_crashed() {
    // `sleep` dies from the stop signal (exit -1): only the Terminating step, which the stream
    // shows and a poller misses, tells this stop from a crash.
    let (_nats, pc, daemon, mut log) = start(
        "processes:\n  web:\n    command: \"sleep 1000\"\n",
        SourceMode::Stream,
    )
    .await;
    log.wait_for("web", Started).await;
    pc.stop_process("web").await;
    let stopped = log.wait_for("web", Stopped).await;
    assert_eq!(stopped.exit_code, Some(-1));
    assert_eq!(stopped.reason, Some(Reason::StopRequested));
    assert!(!stopped.synthetic, "seen live");
    assert!(mode_is(&daemon, "stream"));
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    assert!(log.of("web", Crashed).is_empty(), "{}", log.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_every_crash_and_every_restart() {
    let (_nats, _pc, daemon, mut log) = start(
        r#"
processes:
  flaky:
    command: "sleep 0.2; exit 4"
    availability:
      restart: on_failure
      max_restarts: 3
      backoff_seconds: 1
"#,
        SourceMode::Stream,
    )
    .await;
    log.wait_until("the final crash", LONG, |r| {
        r.iter()
            .any(|r| r.event.event_type == Crashed && r.event.state.status == "Completed")
    })
    .await;
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    let crashed = log.of("flaky", Crashed);
    assert_eq!(
        crashed.len(),
        4,
        "max_restarts 3: 4 runs, 4 crashes\n{}",
        log.dump()
    );
    assert!(crashed.iter().all(|e| e.exit_code == Some(4)));
    let restarted = log.of("flaky", Restarted);
    assert_eq!(restarted.len(), 3, "{}", log.dump());
    let counts: Vec<_> = restarted.iter().map(|e| e.restarts).collect();
    assert_eq!(counts, [Some(1), Some(2), Some(3)]);
    assert!(restarted.iter().all(|e| e.restarts_delta == Some(1)));
    let ids: std::collections::HashSet<_> = log.received.iter().map(|r| &r.event.id).collect();
    assert_eq!(ids.len(), log.received.len(), "every event has its own id");
}

/// What `watch` would print for `process`, in order: the summaries of its lifecycle events
/// (`status_changed` aside).
fn summaries(log: &EventLog, process: &str) -> Vec<String> {
    let mut events: Vec<_> = log
        .received
        .iter()
        .map(|r| &r.event)
        .filter(|e| e.process == process && e.event_type != StatusChanged)
        .collect();
    events.sort_by_key(|e| e.seq);
    events.iter().map(|e| e.summary()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_restart_is_stopped_restarted_and_started() {
    // A backoff longer than process-compose's 1 s: only a daemon that read it from the
    // process's settings (when the stop began) reads the pause as a restart's.
    let (_nats, pc, daemon, mut log) = start(
        r#"
processes:
  api:
    command: "sleep 1000"
    availability:
      backoff_seconds: 3
"#,
        SourceMode::Stream,
    )
    .await;
    let first = log.wait_for("api", Started).await;
    pc.restart_process("api").await;
    log.wait_until("the second start", LONG, |r| {
        count(r, Some("api"), Started) == 2
    })
    .await;
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    assert_eq!(
        summaries(&log, "api"),
        [
            "default/api started",
            "default/api stopped (exit=-1)",
            "default/api restarted (manual)",
            "default/api started",
        ],
        "{}",
        log.dump()
    );
    assert_eq!(
        log.of("api", Stopped)[0].reason,
        Some(Reason::StopRequested)
    );
    let second = log.of("api", Started).pop().unwrap();
    assert_ne!(
        second.state.pid, first.state.pid,
        "the new incarnation's pid was fetched"
    );
    assert!(second.state.pid > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_then_a_later_start_is_stopped_then_started() {
    // The seed's walkthrough: `process stop`, and a few seconds later `process start`.
    let (_nats, pc, daemon, mut log) = start(
        "processes:\n  nats:\n    command: \"trap 'exit 0' TERM; while true; do sleep 0.1; done\"\n",
        SourceMode::Stream,
    )
    .await;
    log.wait_for("nats", Started).await;
    pc.stop_process("nats").await;
    log.wait_for("nats", Stopped).await;
    // The operator's pause, part of the scenario: longer than a restart's (its 1 s backoff and
    // 1 s to launch).
    tokio::time::sleep(Duration::from_secs(3)).await;
    pc.start_process("nats").await;
    log.wait_until("the second start", LONG, |r| {
        count(r, Some("nats"), Started) == 2
    })
    .await;
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    assert_eq!(
        summaries(&log, "nats"),
        [
            "default/nats started",
            "default/nats stopped (exit=0)",
            "default/nats started",
        ],
        "{}",
        log.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_streams_from_new_servers_and_polls_old_ones() {
    let project = "processes:\n  web:\n    command: \"sleep 1000\"\n  job:\n    command: \"sleep 0.5; exit 3\"\n";
    let (_nats, _pc, daemon, mut log) = start(project, SourceMode::Auto).await;
    log.wait_for("job", Crashed).await;
    assert!(mode_is(&daemon, "stream"));
    daemon.stop().await.unwrap();

    let nats = NatsServer::start();
    let old = ProcessCompose::start_with(
        project,
        Options {
            release: Release::BeforeStream,
            ..Options::default()
        },
    )
    .await;
    let daemon = Daemon::spawn(config(&old.url(), &nats.url()));
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("web", Started).await;
    log.wait_for("job", Crashed).await;
    assert!(mode_is(&daemon, "poll"));
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_compose_flips_readiness_and_is_caught_up() {
    let nats = NatsServer::start();
    let mut pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let health = crate::support::free_port();
    let mut config = config(&pc.url(), &nats.url());
    config.process_compose.mode = SourceMode::Stream;
    config.health.enabled = true;
    config.health.listen = ([127, 0, 0, 1], health).into();
    let daemon = Daemon::spawn(config);
    let mut log = EventLog::open(&nats.url()).await;
    let first = log.wait_for("web", Started).await;
    wait_for_http(health, "/readyz", 200).await;

    // The server sends Terminating → Completed as it shuts down, but it may exit before its
    // writer has sent the last frame (seen about once in three runs): the stop is then caught
    // up on reconnect instead of seen live. Either way it is published once.
    pc.stop();
    let body = wait_for_http(health, "/readyz", 503).await;
    assert!(body.contains("process_compose"), "{body}");

    // the new server runs a new incarnation, found by the catch-up on reconnect
    pc.start_again().await;
    log.wait_until("web stopped and started again", LONG, |r| {
        count(r, Some("web"), Stopped) == 1 && count(r, Some("web"), Started) == 2
    })
    .await;
    let again = log.of("web", Started).pop().unwrap();
    assert_ne!(again.id, first.id);
    assert!(
        again.synthetic,
        "caught up from the reconnect, not seen live"
    );
    wait_for_http(health, "/readyz", 200).await;
    assert!(mode_is(&daemon, "stream"));
    daemon.stop().await.unwrap();
    log.read_to_end().await;
    assert_eq!(log.of("web", Stopped).len(), 1, "{}", log.dump());
    let row = log.report(
        "process-compose stopped and started again (started, stopped, started)",
        3,
        |e| matches!(e.event_type, Started | Stopped),
    );
    assert_eq!(row, Reliability::exact(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_processes_are_all_tracked_without_a_disconnect_loop() {
    let mut project = String::from("processes:\n");
    for i in 0..600 {
        project.push_str(&format!("  p{i:03}:\n    command: \"sleep 1000\"\n"));
    }
    let (_nats, _pc, daemon, mut log) = start(&project, SourceMode::Stream).await;
    log.wait_until("600 started", Duration::from_secs(60), |r| {
        count(r, None, Started) == 600
    })
    .await;
    let status = daemon.status.clone();
    assert!(eventually(LONG, || mode_is(&daemon, "stream")).await);
    log.read_to_end().await;
    assert_eq!(count(&log.received, None, Started), 600);
    assert_eq!(
        status.metrics.poll_errors_total(),
        0,
        "no subscription was dropped"
    );
    assert_eq!(status.metrics.processes.get(), 600);
    daemon.stop().await.unwrap();
}
