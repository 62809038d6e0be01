//! The core pipeline against real process-compose and nats-server.

use std::time::Duration;

use async_nats::jetstream;
use pc_eventd::DaemonError;
use pc_eventd_events::event::{EventType::*, Reason, Severity};
use pc_eventd_events::nats::OnMismatch;
use pc_eventd_events::publish::PublishError;

use crate::support::compose::{Options, ProcessCompose, Release};
use crate::support::daemon::{Daemon, config};
use crate::support::events::{EventLog, count};
use crate::support::nats::NatsServer;
use crate::support::{Stack, eventually};

/// Every core scenario runs against both kinds of server, with `mode = "auto"`: a current one
/// (the state stream) and one from before v1.110.0 (polling).
const SERVERS: [Release; 2] = [Release::Current, Release::BeforeStream];

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_processes_are_announced_and_disabled_ones_are_not_started() {
    for server in SERVERS {
        let mut stack = Stack::start_on(
            server,
            r#"
processes:
  web:
    command: "sleep 1000"
  docs:
    command: "sleep 1000"
    disabled: true
    "#,
        )
        .await;
        let log = &mut stack.log;

        let started = log.wait_for("web", Started).await;
        assert_eq!(started.subject, "core.process.default.web.started");
        assert_eq!(started.namespace, "default");
        assert_eq!(started.severity, Severity::Info);
        assert_eq!(started.source, "test");
        assert_eq!(started.state.status, "Running");
        assert!(started.state.is_running);
        assert!(started.state.pid > 0);
        assert!(
            started.timestamp.ends_with('Z') && started.timestamp.len() == 24,
            "{}",
            started.timestamp
        );
        let stored = log
            .received
            .iter()
            .find(|r| r.event.id == started.id)
            .unwrap();
        assert_eq!(
            stored.msg_id.as_deref(),
            Some(started.id.as_str()),
            "id is the Nats-Msg-Id"
        );

        log.wait_until("docs announced as Disabled", LONG, |r| {
            r.iter()
                .any(|r| r.event.process == "docs" && r.event.state.status == "Disabled")
        })
        .await;
        assert!(log.of("docs", Started).is_empty(), "{}", log.dump());
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_is_stopped_not_crashed_and_a_start_is_started() {
    // A service that exits 0 on SIGTERM, as most do. (A poller rarely sees `Terminating`, so a
    // stop that kills the process by signal is indistinguishable from a crash in poll mode;
    // see docs/events.md "Poll mode limits".)
    for server in SERVERS {
        let mut stack = Stack::start_on(
            server,
            r#"
processes:
  web:
    command: "trap 'exit 0' TERM; while true; do sleep 0.1; done"
    "#,
        )
        .await;
        let log = &mut stack.log;
        log.wait_for("web", Started).await;

        stack.pc.stop_process("web").await;
        let stopped = log.wait_for("web", Stopped).await;
        assert_eq!(stopped.exit_code, Some(0));
        assert_eq!(stopped.state.status, "Completed");
        assert!(!stopped.state.is_running);

        stack.pc.start_process("web").await;
        log.wait_until("web started again", LONG, |r| {
            count(r, Some("web"), Started) == 2
        })
        .await;
        let again = log.of("web", Started).pop().unwrap();
        assert_eq!(again.previous_status.as_deref(), Some("Completed"));
        stack.finish().await;
        let log = &stack.log;
        assert!(log.of("web", Crashed).is_empty(), "{}", log.dump());
        assert_eq!(log.of("web", Stopped).len(), 1, "{}", log.dump());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_exit_is_crashed_with_its_code() {
    for server in SERVERS {
        let mut stack = Stack::start_on(
            server,
            r#"
processes:
  job:
    command: "sleep 0.5; exit 3"
    "#,
        )
        .await;
        let log = &mut stack.log;
        let crashed = log.wait_for("job", Crashed).await;
        assert_eq!(crashed.exit_code, Some(3));
        assert_eq!(crashed.severity, Severity::Error);
        assert_eq!(crashed.reason, Some(Reason::ExitedWithFailure));
        assert_eq!(crashed.subject, "core.process.default.job.crashed");
        stack.finish().await;
        let log = &stack.log;
        assert!(log.of("job", Stopped).is_empty(), "{}", log.dump());
        assert_eq!(log.of("job", Crashed).len(), 1, "{}", log.dump());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_policy_yields_crashes_and_counted_restarts() {
    for server in SERVERS {
        let mut stack = Stack::start_on(
            server,
            r#"
processes:
  flaky:
    command: "sleep 0.3; exit 2"
    availability:
      restart: on_failure
      max_restarts: 2
      backoff_seconds: 1
    "#,
        )
        .await;
        let log = &mut stack.log;
        log.wait_until("the final crash after 2 restarts", LONG, |r| {
            r.iter().any(|r| {
                r.event.process == "flaky"
                    && r.event.event_type == Crashed
                    && r.event.state.status == "Completed"
                    && r.event.state.restarts == 2
            })
        })
        .await;
        stack.finish().await;
        let log = &stack.log;

        // The stream sees each of the 3 runs end; a poller (every 200 ms here) may merge two
        // of them, and still counts every restart in `restarts_delta` (below).
        let crashed = log.of("flaky", Crashed);
        match server {
            Release::Current => assert_eq!(crashed.len(), 3, "{}", log.dump()),
            Release::BeforeStream => assert!((2..=3).contains(&crashed.len()), "{}", log.dump()),
        }
        assert!(
            crashed.iter().all(|e| e.exit_code == Some(2)),
            "{}",
            log.dump()
        );
        let restarted = log.of("flaky", Restarted);
        assert_eq!(
            restarted.last().and_then(|e| e.restarts),
            Some(2),
            "{}",
            log.dump()
        );
        let counted: u32 = restarted.iter().filter_map(|e| e.restarts_delta).sum();
        assert_eq!(
            counted,
            2,
            "every policy restart is counted once: {}",
            log.dump()
        );
        assert!(
            restarted
                .iter()
                .all(|e| e.reason == Some(Reason::RestartPolicy))
        );
        assert_eq!(
            log.of("flaky", Started).len(),
            1,
            "a policy restart is not a start"
        );
        assert!(log.of("flaky", Stopped).is_empty(), "{}", log.dump());
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_probe_yields_healthy_then_unhealthy() {
    for server in SERVERS {
        let mut stack = Stack::start_on(
            server,
            r#"
processes:
  api:
    command: "touch $WORK/ready; sleep 1000"
    readiness_probe:
      exec:
        command: "test -f $WORK/ready"
      period_seconds: 1
      failure_threshold: 1000
    "#,
        )
        .await;
        let log = &mut stack.log;
        let healthy = log.wait_for("api", Healthy).await;
        assert_eq!(healthy.state.is_ready, "Ready");
        assert!(healthy.state.has_ready_probe);

        std::fs::remove_file(stack.pc.work_dir().join("ready")).unwrap();
        let unhealthy = log.wait_for("api", Unhealthy).await;
        assert_eq!(unhealthy.severity, Severity::Warning);
        assert_eq!(unhealthy.state.is_ready, "Not Ready");
        assert_eq!(unhealthy.reason, Some(Reason::ReadinessLost));
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotted_names_and_namespaces_shape_subjects() {
    for server in SERVERS {
        let mut stack = Stack::start_on(
            server,
            r#"
processes:
  api.v2:
    command: "sleep 1000"
    namespace: frontend
  worker:
    command: "sleep 1000"
    namespace: backend
    "#,
        )
        .await;
        let log = &mut stack.log;
        let api = log.wait_for("api.v2", Started).await;
        let worker = log.wait_for("worker", Started).await;
        // the dot is encoded, so the subject keeps five tokens; the payload keeps the real name
        assert_eq!(api.subject, "core.process.frontend.api%2Ev2.started");
        assert_eq!(api.process, "api.v2");
        assert_eq!(api.namespace, "frontend");
        assert_eq!(worker.subject, "core.process.backend.worker.started");
        assert_eq!(worker.namespace, "backend");
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_resumes_and_without_its_state_is_deduplicated() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(
        r#"
processes:
  web:
    command: "trap 'exit 0' TERM; while true; do sleep 0.1; done"
  docs:
    command: "sleep 1000"
    disabled: true
"#,
    )
    .await;
    let first = Daemon::spawn(config(&pc.url(), &nats.url()));
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("web", Started).await;
    first.stop().await.unwrap();
    log.read_to_end().await;

    // A change while no daemon runs, then a restart: it resumes from the stored state and
    // publishes only the change, with the sequence going on.
    let seq_before = log.of("web", Started)[0].seq;
    pc.stop_process("web").await;
    pc.wait_for_status("web", "Completed", LONG).await;
    let second = Daemon::spawn(config(&pc.url(), &nats.url()));
    let stopped = log.wait_for("web", Stopped).await;
    assert!(
        stopped.seq > seq_before,
        "the sequence continues across restarts"
    );
    let deduplicated = second.status.metrics.events_deduplicated.get();
    second.stop().await.unwrap();
    log.read_to_end().await;
    assert_eq!(
        log.of("web", Started).len(),
        1,
        "no re-announcement:\n{}",
        log.dump()
    );
    assert_eq!(log.of("docs", StatusChanged).len(), 1, "{}", log.dump());
    assert_eq!(deduplicated, 0);

    // Without its state (a lost bucket) a daemon announces again, with the same ids: JetStream
    // drops every copy within its duplicate window.
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.delete_key_value("PROCESS_EVENTS_STATE").await.unwrap();
    let before = log.received.len();
    let third = Daemon::spawn(config(&pc.url(), &nats.url()));
    let stats = third.status.clone();
    assert!(
        eventually(LONG, || stats.metrics.events_deduplicated.get() >= 3).await,
        "the third daemon re-announced what it found"
    );
    third.stop().await.unwrap();
    log.read_to_end().await;
    assert_eq!(
        log.received.len(),
        before,
        "nothing new reached the stream:\n{}",
        log.dump()
    );
    assert_eq!(stats.metrics.published_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_and_unix_socket() {
    let token = "a-test-token-of-more-than-twenty-chars";
    let nats = NatsServer::start();
    let pc = ProcessCompose::start_with(
        "processes:\n  web:\n    command: \"sleep 1000\"\n",
        Options {
            unix_socket: true,
            token: Some(token.into()),
            ..Options::default()
        },
    )
    .await;

    let mut wrong = config("http://127.0.0.1:1", &nats.url());
    wrong.process_compose.socket = pc.socket().map(Into::into);
    wrong.process_compose.token = Some(pc_eventd_events::nats::Secret::new(
        "wrong-token-wrong-token-wrong",
    ));
    let refused = Daemon::spawn(wrong.clone());
    let stats = refused.status.clone();
    assert!(eventually(LONG, || stats.metrics.poll_errors_total() >= 2).await);
    assert_eq!(stats.metrics.polls.get(), 0);
    refused.stop().await.unwrap();

    let mut right = wrong;
    right.process_compose.token = Some(pc_eventd_events::nats::Secret::new(token));
    let daemon = Daemon::spawn(right);
    let mut log = EventLog::open(&nats.url()).await;
    let started = log.wait_for("web", Started).await;
    assert_eq!(started.subject, "core.process.default.web.started");
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_with_other_settings_is_updated_or_reported() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: "PROCESS_EVENTS".into(),
        subjects: vec!["core.process.>".into()],
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();

    let mut strict = config(&pc.url(), &nats.url());
    strict.nats.stream.on_mismatch = OnMismatch::Fail;
    let refused = Daemon::spawn(strict).finished().await;
    match refused {
        Err(DaemonError::Publish(PublishError::StreamMismatch { differences, .. })) => {
            assert!(differences.contains("max_age"), "{differences}");
        }
        other => panic!("expected a stream mismatch, got {other:?}"),
    }

    let daemon = Daemon::spawn(config(&pc.url(), &nats.url()));
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("web", Started).await;
    let mut stream = js.get_stream("PROCESS_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    daemon.stop().await.unwrap();
}
