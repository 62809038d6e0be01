//! Readiness as the real process-compose reports it: `-` at start, `Not Ready` after each failed
//! probe, `Ready` after a pass. A run that has never been Ready is starting, not unhealthy.

use std::time::Duration;

use pc_eventd::SourceMode;
use pc_eventd_events::event::EventType::*;
use pc_eventd_events::event::{LifecycleEvent, Reason};

use crate::support::Stack;
use crate::support::compose::{ProcessCompose, Release};
use crate::support::daemon::{Daemon, config};
use crate::support::events::{EventLog, Received, count};
use crate::support::nats::NatsServer;

const LONG: Duration = Duration::from_secs(30);

/// `api` becomes ready once `$WORK/ready` exists, probed every second, never stopped for it.
fn project(command: &str) -> String {
    format!(
        r#"
processes:
  api:
    command: "{command}"
    readiness_probe:
      exec:
        command: "test -f $WORK/ready"
      period_seconds: 1
      failure_threshold: 1000
"#
    )
}

/// Whether `received` holds `api`'s `healthy` number `n` (from 1).
fn healthy_count(received: &[Received], n: usize) -> bool {
    count(received, Some("api"), Healthy) >= n
}

fn unhealthy(log: &EventLog) -> Vec<LifecycleEvent> {
    log.of("api", Unhealthy)
}

/// Waits for process-compose to report `api` Not Ready, then for `api`'s `n`th `healthy`, and
/// checks that no `unhealthy` came before it (events arrive in order, so all before it are here).
async fn starting_then_healthy(stack: &mut Stack, n: usize) {
    stack
        .pc
        .wait_for_field("api", "is_ready", "Not Ready", LONG)
        .await;
    stack
        .log
        .wait_until("api healthy", LONG, |r| healthy_count(r, n))
        .await;
    assert!(unhealthy(&stack.log).is_empty(), "{}", stack.log.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_becomes_ready_late_is_never_unhealthy() {
    // Not Ready for its first probes (about three), then Ready: starting, then healthy.
    for release in [Release::Current, Release::BeforeStream] {
        let mut stack =
            Stack::start_on(release, &project("sleep 3; touch $WORK/ready; sleep 1000")).await;
        starting_then_healthy(&mut stack, 1).await;
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_process_restarted_starts_over_without_unhealthy() {
    let mut stack = Stack::start_on(
        Release::Current,
        &project("rm -f $WORK/ready; sleep 2; touch $WORK/ready; sleep 1000"),
    )
    .await;
    starting_then_healthy(&mut stack, 1).await;
    stack.pc.restart_process("api").await;
    starting_then_healthy(&mut stack, 2).await;
    assert_eq!(count(&stack.log.received, Some("api"), Restarted), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_not_ready_after_its_grace_is_unhealthy_once() {
    // The grace from the configuration, in both modes: the stream sends nothing while a probe
    // keeps failing, so the daemon's own clock must notice.
    for mode in [SourceMode::Stream, SourceMode::Poll] {
        let nats = NatsServer::start();
        let pc = ProcessCompose::start(&project("sleep 1000")).await;
        let mut config = config(&pc.url(), &nats.url());
        config.process_compose.mode = mode;
        config.process_compose.readiness_grace = Some(Duration::from_secs(3));
        let daemon = Daemon::spawn(config);
        let mut log = EventLog::open(&nats.url()).await;
        let never = log.wait_for("api", Unhealthy).await;
        assert_eq!(never.reason, Some(Reason::NeverReady), "{mode:?}");
        assert_eq!(never.state.is_ready, "Not Ready");
        assert_eq!(never.state.status, "Running");
        let started = log.of("api", Started).remove(0);
        assert!(started.seq < never.seq);
        // then it becomes ready: one unhealthy for the whole wait, then healthy
        std::fs::write(pc.work_dir().join("ready"), "").unwrap();
        log.wait_until("api healthy", LONG, |r| healthy_count(r, 1))
            .await;
        assert_eq!(unhealthy(&log).len(), 1, "{mode:?}: {}", log.dump());
        daemon.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_announcement_of_a_starting_run_is_not_unhealthy() {
    // The daemon starts while the process is Not Ready (and has never been Ready).
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(&project("sleep 1000")).await;
    pc.wait_for_field("api", "is_ready", "Not Ready", LONG)
        .await;
    let daemon = Daemon::spawn(config(&pc.url(), &nats.url()));
    let mut log = EventLog::open(&nats.url()).await;
    let started = log.wait_for("api", Started).await;
    assert_eq!(started.state.is_ready, "Not Ready");
    std::fs::write(pc.work_dir().join("ready"), "").unwrap();
    log.wait_until("api healthy", LONG, |r| healthy_count(r, 1))
        .await;
    assert!(unhealthy(&log).is_empty(), "{}", log.dump());
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_for_never_becoming_ready_says_so_before_its_restart() {
    // process-compose's defaults: at the probe's failure threshold (here 2 failures, 1 s apart)
    // it stops the run, and `restart: always` starts the next one.
    let mut stack = Stack::start_on(
        Release::Current,
        r#"
processes:
  api:
    command: "sleep 1000"
    readiness_probe:
      exec:
        command: "false"
      period_seconds: 1
      failure_threshold: 2
    availability:
      restart: always
      backoff_seconds: 1
"#,
    )
    .await;
    stack.log.wait_for("api", Restarted).await;
    let never = unhealthy(&stack.log);
    assert_eq!(never.len(), 1, "{}", stack.log.dump());
    assert_eq!(never[0].reason, Some(Reason::NeverReady));
    let stopped = stack.log.of("api", Stopped);
    let restarted = stack.log.of("api", Restarted);
    assert!(never[0].seq < stopped[0].seq && stopped[0].seq < restarted[0].seq);
    assert_eq!(restarted[0].reason, Some(Reason::RestartPolicy));
    stack.stop().await;
}
