//! `pc-eventd remediate` against real peers: restarts within its policy, stops at the limit,
//! publishes its outcomes, changes nothing in a dry run, survives its own restart, and restarts
//! a process that stays over its memory threshold.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use pc_eventd::Config;
use pc_eventd_events::event::EventType::*;
use pc_eventd_events::event::{EventType, LifecycleEvent, Reason, Resource};
use pc_eventd_events::remediation::{Action, RemediationEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::Stack;
use crate::support::compose::Release;
use crate::support::events::{Received, count};

const LONG: Duration = Duration::from_secs(30);

/// Crashes a third of a second after each start; nothing restarts it but the remediator.
const FRAGILE: &str = r#"
processes:
  fragile:
    command: "sleep 0.3; exit 3"
    disabled: true
"#;

/// The remediator, in-process, until stopped.
struct Remediator {
    stop: CancellationToken,
    task: JoinHandle<Result<(), pc_eventd::remediate::RemediateError>>,
}

impl Remediator {
    /// Starts it and waits until its durable consumer exists, so no trigger precedes it.
    async fn start(config: &Config) -> Self {
        let stop = CancellationToken::new();
        let compose = config.process_compose.client().unwrap();
        let task = tokio::spawn(pc_eventd::remediate::run(
            config.remediate.clone(),
            config.nats.clone(),
            compose,
            config.process_compose.source(),
            stop.clone(),
        ));
        crate::support::wait_for_consumer(&config.nats.url, &config.remediate.durable, || {
            task.is_finished()
        })
        .await;
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(LONG, self.task)
            .await
            .expect("the remediator stops")
            .expect("no panic")
            .expect("no error");
    }
}

fn remediator_config(stack: &Stack, max_attempts: u32) -> Config {
    let mut config = crate::support::daemon::config(&stack.pc.url(), &stack.nats_url());
    let policy = &mut config.remediate.policy;
    policy.max_attempts = max_attempts;
    policy.backoff = Duration::from_millis(100);
    // Every crash comes 0.3 s after a restart: keep the breaker out of this.
    policy.breaker_failures = 0;
    config
}

/// Reads the remediation stream until `done` holds, panicking after `LONG`.
async fn outcomes(
    nats_url: &str,
    done: impl Fn(&[RemediationEvent]) -> bool,
) -> Vec<RemediationEvent> {
    let js = jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let mut messages = js
        .get_stream("REMEDIATION_EVENTS")
        .await
        .expect("the remediator created its stream")
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + LONG;
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, messages.next()).await {
            Ok(Some(message)) => {
                let message = message.unwrap();
                seen.push(serde_json::from_slice(&message.payload).expect("a remediation event"));
            }
            _ => panic!("timed out; outcomes so far: {seen:#?}"),
        }
    }
    seen
}

/// Two restarts, then the limit of two attempts per window.
const TWO_RESTARTS_THEN_THE_LIMIT: [(Action, Option<u32>, Option<&str>); 3] = [
    (Action::Restarted, Some(1), None),
    (Action::Restarted, Some(2), None),
    (Action::Skipped, None, Some("limit_reached")),
];

fn actions(outcomes: &[RemediationEvent]) -> Vec<(Action, Option<u32>, Option<&str>)> {
    outcomes
        .iter()
        .map(|o| (o.action, o.attempt, o.reason.as_deref()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_are_restarted_within_the_policy_until_the_limit() {
    let mut stack = Stack::start_on(Release::Current, FRAGILE).await;
    let config = remediator_config(&stack, 2);
    let remediator = Remediator::start(&config).await;
    stack.pc.start_process("fragile").await;

    let seen = outcomes(&stack.nats_url(), |o| o.len() >= 3).await;
    assert_eq!(actions(&seen), TWO_RESTARTS_THEN_THE_LIMIT);
    // Each crash was one trigger, and what the outcomes say happened did happen.
    let triggers: std::collections::HashSet<_> = seen.iter().map(|o| &o.trigger.id).collect();
    assert_eq!(triggers.len(), 3);
    stack
        .log
        .wait_until("three crashes", LONG, |r| {
            count(r, Some("fragile"), Crashed) >= 3
        })
        .await;
    stack.pc.wait_for_status("fragile", "Completed", LONG).await;
    // It skipped the third crash: nothing restarts fragile once it stops.
    remediator.stop().await;
    stack.finish().await;
    assert_eq!(count(&stack.log.received, Some("fragile"), Crashed), 3);
    assert_eq!(count(&stack.log.received, Some("fragile"), Started), 3);
    assert!(
        seen.iter()
            .all(|o| o.trigger.event_type == Crashed && !o.dry_run)
    );

    // The audit trail, for people.
    let mut watch = crate::support::binary::Binary::spawn(&[
        "watch",
        "--remediation",
        "--process",
        "fragile",
        "--nats-url",
        &stack.nats_url(),
    ]);
    let lines = watch
        .stdout_until(LONG, |l| l.iter().any(|l| l.contains("skipped")))
        .await;
    assert!(
        lines[0]
            .ends_with("INFO  default/fragile remediation: restarted (attempt 1, after crashed)"),
        "{lines:?}"
    );
    assert!(
        lines[2]
            .ends_with("WARN  default/fragile remediation: skipped (limit_reached, after crashed)"),
        "{lines:?}"
    );
    assert_eq!(watch.terminate().await, Some(0));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_decides_and_publishes_but_restarts_nothing_and_denied_is_left_alone() {
    let project =
        format!("{FRAGILE}  kept-down:\n    command: \"sleep 0.3; exit 5\"\n    disabled: true\n");
    let mut stack = Stack::start_on(Release::Current, &project).await;
    let mut config = remediator_config(&stack, 2);
    config.remediate.dry_run = true;
    config.remediate.deny = vec!["default/kept-*".into()];
    let remediator = Remediator::start(&config).await;
    // The denied one crashes first: the remediator handles triggers in stream order, so once
    // it has decided on fragile's crash it has passed over kept-down's.
    stack.pc.start_process("kept-down").await;
    stack.log.wait_for("kept-down", Crashed).await;
    stack.pc.start_process("fragile").await;

    let seen = outcomes(&stack.nats_url(), |o| !o.is_empty()).await;
    assert_eq!(actions(&seen), [(Action::WouldRestart, Some(1), None)]);
    assert!(seen[0].dry_run);
    assert_eq!(seen[0].process, "fragile");
    // Nothing happens after the one crash of each: no second start, no event for the denied.
    remediator.stop().await;
    stack.finish().await;
    for name in ["fragile", "kept-down"] {
        assert_eq!(count(&stack.log.received, Some(name), Started), 1, "{name}");
        assert_eq!(count(&stack.log.received, Some(name), Crashed), 1, "{name}");
    }
    let js = jetstream::new(async_nats::connect(stack.nats_url()).await.unwrap());
    let mut stream = js.get_stream("REMEDIATION_EVENTS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "one decision in all"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_remediator_neither_loses_nor_doubles_an_action() {
    let mut stack = Stack::start_on(Release::Current, FRAGILE).await;
    let config = remediator_config(&stack, 2);
    let first = Remediator::start(&config).await;
    stack.pc.start_process("fragile").await;
    outcomes(&stack.nats_url(), |o| !o.is_empty()).await;
    // Down while the restarted process crashes again.
    first.stop().await;
    stack
        .log
        .wait_until("the second crash", LONG, |r| {
            count(r, Some("fragile"), Crashed) >= 2
        })
        .await;

    let second = Remediator::start(&config).await;
    let seen = outcomes(&stack.nats_url(), |o| o.len() >= 3).await;
    // The crash that came while it was down is not lost (attempt 2), and the limit counts the
    // first run's attempt too.
    assert_eq!(actions(&seen), TWO_RESTARTS_THEN_THE_LIMIT);
    stack
        .log
        .wait_until("the third crash", LONG, |r| {
            count(r, Some("fragile"), Crashed) >= 3
        })
        .await;
    let crashes: Vec<_> = stack
        .log
        .of("fragile", Crashed)
        .into_iter()
        .map(|e| e.id)
        .collect();
    let triggers: Vec<_> = seen.iter().map(|o| o.trigger.id.clone()).collect();
    assert_eq!(triggers, crashes[..3], "each crash handled once, in order");
    second.stop().await;
    stack.stop().await;
}

/// Takes ~200 MiB (written to, so resident) in its first run and sleeps; a later run (a marker
/// under `$WORK` says one ran) stays small and crashes after 10 s. Nothing restarts it but the
/// remediator.
const HOG: &str = r#"
processes:
  hog:
    command: >-
      if [ -e "$WORK/hog.ran" ]; then sleep 10; exit 3; fi;
      touch "$WORK/hog.ran";
      exec python3 -c "import time; b = b'x' * (200 << 20); time.sleep(600)"
    disabled: true
"#;

const MEMORY_LIMIT: f64 = 64.0 * 1024.0 * 1024.0;

/// The daemon of `stack` replaced by one that samples every second, with a 64 MiB memory
/// threshold for `hog` held for 2 s.
async fn with_memory_threshold(stack: &mut Stack) {
    let old = stack.daemon.take().expect("the stack's daemon");
    old.stop().await.expect("the first daemon stops cleanly");
    let mut config = crate::support::daemon::config(&stack.pc.url(), &stack.nats_url());
    config.conditions = serde_json::from_value(serde_json::json!({
        "sample_interval": "1s",
        "pressure": [{"processes": ["hog"], "memory": "64MiB", "for": "2s"}],
    }))
    .expect("a [conditions] section");
    stack.daemon = Some(crate::support::daemon::Daemon::spawn(config));
}

/// Waits until the durable consumer `durable` has handled (acknowledged) everything stream
/// `PROCESS_EVENTS` holds.
async fn drained(nats_url: &str, durable: &str) {
    let js = jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let stream = js.get_stream("PROCESS_EVENTS").await.unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let info = stream.consumer_info(durable).await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{durable} never caught up: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events of `hog` of `event_type` about memory.
fn memory_events(received: &[Received], event_type: EventType) -> Vec<&LifecycleEvent> {
    received
        .iter()
        .map(|r| &r.event)
        .filter(|e| e.process == "hog" && e.event_type == event_type)
        .filter(|e| {
            e.pressure
                .as_ref()
                .is_some_and(|p| p.resource == Resource::Memory)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_over_its_memory_threshold_is_restarted_within_the_policy() {
    let mut stack = Stack::start_on(Release::Current, HOG).await;
    with_memory_threshold(&mut stack).await;
    // One attempt per window, shared by every trigger of the process.
    let mut config = remediator_config(&stack, 1);
    // given_up too: the crash before it is the trigger, so it is no second one.
    config.remediate.on = vec![Crashed, Unhealthy, ResourcePressure, GivenUp];
    let remediator = Remediator::start(&config).await;
    stack.pc.start_process("hog").await;

    // The daemon sees it over the threshold for the rule's 2 s...
    stack
        .log
        .wait_until("hog's memory pressure", LONG, |r| {
            !memory_events(r, ResourcePressure).is_empty()
        })
        .await;
    let pressure = memory_events(&stack.log.received, ResourcePressure)[0].clone();
    let reading = pressure.pressure.as_ref().unwrap();
    assert_eq!(reading.threshold, MEMORY_LIMIT);
    assert!(reading.value > MEMORY_LIMIT, "{reading:?}");
    assert_eq!(reading.for_seconds, 2);

    // ...the remediator restarts it, and says that pressure was why...
    let seen = outcomes(&stack.nats_url(), |o| !o.is_empty()).await;
    assert_eq!(actions(&seen), [(Action::Restarted, Some(1), None)]);
    assert_eq!(seen[0].trigger.event_type, ResourcePressure);
    assert_eq!(seen[0].trigger.id, pressure.id);
    assert!(!seen[0].dry_run);

    // ...process-compose runs a new incarnation...
    let compose = config.process_compose.client().unwrap();
    let deadline = Instant::now() + LONG;
    let new_pid = loop {
        let now = compose.process("hog").await.expect("hog's state");
        if now.status.is_running() && now.pid > 0 && now.pid != pressure.state.pid {
            break now.pid;
        }
        assert!(
            Instant::now() < deadline,
            "hog never ran again after pid {}: {now:?}",
            pressure.state.pid
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // ...and the new run, under the threshold for 2 s, ends the episode.
    stack
        .log
        .wait_until("hog's recovery", LONG, |r| {
            !memory_events(r, ResourceRecovered).is_empty()
        })
        .await;
    let recovered = memory_events(&stack.log.received, ResourceRecovered)[0].clone();
    assert_eq!(recovered.state.pid, new_pid, "the new run recovered");
    assert!(recovered.seq > pressure.seq);
    let reading = recovered.pressure.as_ref().unwrap();
    assert!(reading.value < MEMORY_LIMIT, "{reading:?}");

    // process-compose and the daemon saw the remediator's restart: a manual one.
    assert!(
        stack.log.received.iter().any(|r| r.event.process == "hog"
            && r.event.event_type == Restarted
            && r.event.reason == Some(Reason::ManualRestart)
            && (pressure.seq..recovered.seq).contains(&r.event.seq)),
        "{}",
        stack.log.dump()
    );

    // The same limits as a crash's: when the new run crashes, the memory restart has used the
    // window's one attempt.
    let seen = outcomes(&stack.nats_url(), |o| o.len() >= 2).await;
    assert_eq!(
        actions(&seen),
        [
            (Action::Restarted, Some(1), None),
            (Action::Skipped, None, Some("limit_reached"))
        ]
    );
    assert_eq!(seen[1].trigger.event_type, Crashed);
    stack.pc.wait_for_status("hog", "Completed", LONG).await;
    stack.finish().await;
    drained(&stack.nats_url(), &config.remediate.durable).await;
    remediator.stop().await;
    // One episode, one crash (process-compose gave up on it: `restart: no`), two decisions in
    // all.
    assert_eq!(count(&stack.log.received, Some("hog"), GivenUp), 1);
    assert_eq!(
        memory_events(&stack.log.received, ResourcePressure).len(),
        1
    );
    assert_eq!(
        memory_events(&stack.log.received, ResourceRecovered).len(),
        1
    );
    assert_eq!(count(&stack.log.received, Some("hog"), Crashed), 1);
    let js = jetstream::new(async_nats::connect(stack.nats_url()).await.unwrap());
    let mut stream = js.get_stream("REMEDIATION_EVENTS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_hosts_crash_in_the_same_stream_is_not_this_remediators() {
    let mut stack = Stack::start_on(Release::Current, FRAGILE).await;
    // A second host publishing into the same stream, with a process of the same name.
    let other = crate::support::compose::ProcessCompose::start(FRAGILE).await;
    let mut other_config = crate::support::daemon::config(&other.url(), &stack.nats_url());
    other_config.process_compose.source = Some("web-02".into());
    let other_daemon = crate::support::daemon::Daemon::spawn(other_config);
    let remediator = Remediator::start(&remediator_config(&stack, 1)).await;

    // The other host's crash first: handled in stream order, its outcome would come first.
    other.start_process("fragile").await;
    stack
        .log
        .wait_until("web-02's crash", LONG, |r| {
            r.iter()
                .any(|r| r.event.source == "web-02" && r.event.event_type == Crashed)
        })
        .await;
    stack.pc.start_process("fragile").await;
    let seen = outcomes(&stack.nats_url(), |o| !o.is_empty()).await;
    assert_eq!(seen[0].source, "test", "{seen:#?}");
    assert_eq!(seen[0].action, Action::Restarted);
    remediator.stop().await;
    other_daemon.stop().await.unwrap();
    stack.finish().await;
    // Nothing restarted the other host's process: it ran once.
    let other_starts = stack
        .log
        .received
        .iter()
        .filter(|r| r.event.source == "web-02" && r.event.event_type == Started)
        .count();
    assert_eq!(other_starts, 1, "{}", stack.log.dump());
}
