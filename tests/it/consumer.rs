//! The consumer library and `watch`'s history flags, against the daemon's real stream.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use pc_eventd::format_line;
use pc_eventd_events::consumer::{Consumer, Delivery, Durable, Filter, Received, Start};
use pc_eventd_events::event::{EventType::*, LifecycleEvent, Severity};
use pc_eventd_events::process_compose::ComposeClient;

use crate::support::Stack;
use crate::support::binary::Binary;
use crate::support::compose::Release;

const LONG: Duration = Duration::from_secs(20);

/// Which events of the log a filter should select.
type Selects = fn(&LifecycleEvent) -> bool;

/// The stack running `project`, once `crasher` has crashed and everything else has settled.
async fn settled_stack(project: &str) -> Stack {
    let mut stack = Stack::start_on(Release::Current, project).await;
    stack.log.wait_for("crasher", Crashed).await;
    stack.caught_up().await;
    stack
}

/// Ids of the events in the stack's log that `keep` selects, in stream order.
fn ids_where(stack: &Stack, keep: impl Fn(&LifecycleEvent) -> bool) -> Vec<String> {
    stack
        .log
        .received
        .iter()
        .filter(|r| keep(&r.event))
        .map(|r| r.event.id.clone())
        .collect()
}

/// Ids of everything `filter` reads from the start of the stream.
pub(crate) async fn history_ids(consumer: &Consumer, filter: &Filter) -> Vec<String> {
    let mut events = consumer.subscribe(filter, Start::All).await.unwrap();
    let history = tokio::time::timeout(LONG, events.history())
        .await
        .expect("the history is read within 20s")
        .unwrap();
    history
        .into_iter()
        .filter_map(Received::into_event)
        .map(|d| d.event.id)
        .collect()
}

/// Every event the stream holds from `start` on.
async fn deliveries(consumer: &Consumer, start: Start) -> Vec<Delivery> {
    let mut events = consumer.subscribe(&Filter::default(), start).await.unwrap();
    let history = tokio::time::timeout(LONG, events.history())
        .await
        .expect("the history is read within 20s")
        .unwrap();
    history
        .into_iter()
        .filter_map(Received::into_event)
        .collect()
}

fn compose_client(stack: &Stack) -> ComposeClient {
    let mut config = pc_eventd::Config::default();
    config.process_compose.url = stack.pc.url();
    config.process_compose.client().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_receives_exactly_what_its_filter_selects() {
    let stack = settled_stack(crate::support::THREE_NAMESPACES).await;
    let consumer = Consumer::connect_url(&stack.nats_url()).await.unwrap();

    let cases: Vec<(Filter, Selects)> = vec![
        (Filter::default(), |_| true),
        (Filter::default().with_type(Crashed), |e| {
            e.event_type == Crashed
        }),
        // two types: two filter subjects on one consumer
        (
            Filter::default().with_type(Crashed).with_type(Started),
            |e| matches!(e.event_type, Crashed | Started),
        ),
        (Filter::default().with_process("nats"), |e| {
            e.process == "nats"
        }),
        (Filter::default().with_process("default/web"), |e| {
            e.process == "web" && e.namespace == "default"
        }),
        // the right name in the wrong namespace selects nothing
        (Filter::default().with_process("jobs/web"), |_| false),
        (Filter::default().with_namespace("jobs"), |e| {
            e.namespace == "jobs"
        }),
        (
            Filter::default().with_process("crasher").with_type(Crashed),
            |e| e.process == "crasher" && e.event_type == Crashed,
        ),
        (
            Filter {
                min_severity: Some(Severity::Info),
                ..Filter::default()
            },
            |e| e.severity >= Severity::Info,
        ),
    ];
    for (filter, keep) in &cases {
        let expected = ids_where(&stack, keep);
        assert_eq!(history_ids(&consumer, filter).await, expected, "{filter:?}");
    }
    assert!(!ids_where(&stack, |e| e.event_type == Crashed).is_empty());

    // from a stream sequence: resuming after a delivery reads exactly what followed it
    let everything = deliveries(&consumer, Start::All).await;
    assert!(everything.len() >= 4, "{} events", everything.len());
    let middle = everything.len() / 2;
    let resumed = deliveries(
        &consumer,
        Start::Sequence(everything[middle].stream_sequence + 1),
    )
    .await;
    let ids = |deliveries: &[Delivery]| -> Vec<String> {
        deliveries.iter().map(|d| d.event.id.clone()).collect()
    };
    assert_eq!(ids(&resumed), ids(&everything[middle + 1..]));

    // live: a subscription for new events sees the next one of its process and only that
    let mut web = consumer
        .subscribe(&Filter::default().with_process("default/web"), Start::New)
        .await
        .unwrap();
    assert!(
        web.history().await.unwrap().is_empty(),
        "new only: no history"
    );
    compose_client(&stack).restart("web").await.unwrap();
    let next = tokio::time::timeout(LONG, web.next())
        .await
        .expect("an event within 20s")
        .expect("the stream goes on")
        .unwrap()
        .into_event()
        .expect("an event, not a loss marker");
    assert_eq!(
        (next.event.namespace.as_str(), next.event.process.as_str()),
        ("default", "web")
    );
    assert!(
        !ids_where(&stack, |_| true).contains(&next.event.id),
        "a new event, not history"
    );
    assert_eq!(web.undecodable(), 0);

    // something in the stream that is not an event is skipped and counted, not a panic
    let client = async_nats::connect(stack.nats_url()).await.unwrap();
    jetstream::new(client)
        .publish("core.process.default.junk.crashed", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut junk = consumer
        .subscribe(&Filter::default().with_process("junk"), Start::All)
        .await
        .unwrap();
    assert!(junk.history().await.unwrap().is_empty());
    assert_eq!(junk.undecodable(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_stopped_mid_stream_handles_each_event_once() {
    let project: String = std::iter::once("processes:\n".to_owned())
        .chain((0..12).map(|i| format!("  p{i:02}:\n    command: \"sleep 0.3; exit 1\"\n")))
        .chain(std::iter::once(
            "  crasher:\n    command: \"sleep 0.6; exit 3\"\n".to_owned(),
        ))
        .collect();
    let mut stack = settled_stack(&project).await;
    stack
        .log
        .wait_until("every process crashed", LONG, |r| {
            crate::support::events::count(r, None, Crashed) == 13
        })
        .await;
    stack.caught_up().await;
    let all = ids_where(&stack, |_| true);
    let half = all.len() / 2;

    let mut durable = Durable::new("once");
    durable.start = Start::All;
    // Anything fetched but not handled at a stop comes back quickly.
    durable.ack_wait = Duration::from_secs(2);
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    // How many were handled, for stop conditions that hold the moment the handler returns.
    let (count, _) = tokio::sync::watch::channel(0usize);
    let handler = |event: LifecycleEvent| {
        handled.lock().unwrap().push(event.id);
        count.send_modify(|n| *n += 1);
        async { Ok::<(), String>(()) }
    };
    let handled_at_least = |n: usize| {
        let mut count = count.subscribe();
        async move {
            let _ = count.wait_for(|handled| *handled >= n).await;
        }
    };

    // first run: stopped halfway, as a program that is shut down
    let consumer = Consumer::connect_url(&stack.nats_url()).await.unwrap();
    let first = tokio::time::timeout(
        LONG,
        consumer.run_durable(
            &durable,
            &Filter::default(),
            handler,
            handled_at_least(half),
        ),
    )
    .await
    .expect("handled within 20s")
    .unwrap();
    assert!(first.handled >= half as u64, "{first:?}");
    assert!(
        first.handled < all.len() as u64,
        "stopped mid-stream: {first:?}"
    );
    drop(consumer);

    // second run, a new connection with the same name: it goes on where the first stopped
    let consumer = Consumer::connect_url(&stack.nats_url()).await.unwrap();
    let second = tokio::time::timeout(
        LONG,
        consumer.run_durable(
            &durable,
            &Filter::default(),
            handler,
            handled_at_least(all.len()),
        ),
    )
    .await
    .expect("handled within 20s")
    .unwrap();
    assert_eq!(first.handled + second.handled, all.len() as u64);
    let handled = handled.lock().unwrap().clone();
    let mut sorted_handled = handled.clone();
    sorted_handled.sort();
    sorted_handled.dedup();
    assert_eq!(sorted_handled.len(), handled.len(), "nothing handled twice");
    let mut sorted_all = all.clone();
    sorted_all.sort();
    assert_eq!(sorted_handled, sorted_all, "every event handled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_always_fails_gets_its_event_parked_after_max_deliver() {
    let stack = settled_stack(crate::support::THREE_NAMESPACES).await;
    let client = async_nats::connect(stack.nats_url()).await.unwrap();
    let mut parked = client.subscribe("parked.test").await.unwrap();
    client.flush().await.unwrap();
    // Something in the stream that is not an event: terminated and counted, no panic.
    let js = jetstream::new(client.clone());
    js.publish("core.process.default.junk.crashed", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let mut durable = Durable::new("always-fails");
    durable.start = Start::All;
    durable.max_deliver = 3;
    durable.backoff = vec![Duration::from_millis(50), Duration::from_millis(100)];
    durable.park_subject = Some("parked.test".into());
    let calls = AtomicU32::new(0);
    let handler = |event: LifecycleEvent| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Err(format!("cannot handle {}", event.id)) }
    };
    let parked_message = Arc::new(Mutex::new(None));
    let stop = {
        let slot = parked_message.clone();
        async move {
            *slot.lock().unwrap() = parked.next().await;
        }
    };
    let consumer = Consumer::connect_url(&stack.nats_url()).await.unwrap();
    let filter = Filter::default().with_type(Crashed);
    let report = tokio::time::timeout(LONG, consumer.run_durable(&durable, &filter, handler, stop))
        .await
        .expect("the event is parked within 20s")
        .unwrap();

    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "delivered max_deliver times"
    );
    assert_eq!(
        (
            report.handled,
            report.retried,
            report.parked,
            report.undecodable
        ),
        (0, 2, 1, 1),
        "{report:?}"
    );
    let message = parked_message.lock().unwrap().take().expect("parked");
    let event: LifecycleEvent = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (event.process.as_str(), event.event_type),
        ("crasher", Crashed)
    );
    let headers = message.headers.expect("headers say why");
    assert_eq!(headers.get("Pc-Eventd-Deliveries").unwrap().as_str(), "3");
    assert_eq!(
        headers.get("Pc-Eventd-Consumer").unwrap().as_str(),
        "always-fails"
    );
    assert!(
        headers
            .get("Pc-Eventd-Error")
            .unwrap()
            .as_str()
            .starts_with("cannot handle")
    );

    // Terminated, not left for redelivery: the server holds nothing more for this consumer.
    let info = js
        .get_stream("PROCESS_EVENTS")
        .await
        .unwrap()
        .consumer_info("always-fails")
        .await
        .unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_since_replays_history_and_last_state_prints_one_line_per_process() {
    let stack = settled_stack(crate::support::THREE_NAMESPACES).await;
    let url = stack.nats_url();
    let line_ends = |event: &LifecycleEvent| format_line(event, false)[13..].to_owned();

    // --since: what happened before the watch started, then new events
    let mut since = Binary::spawn(&["watch", "--nats-url", &url, "--since", "10m"]);
    let crashed = stack.log.of("crasher", Crashed)[0].clone();
    let started = stack.log.of("web", Started)[0].clone();
    since
        .stdout_until(LONG, |l| {
            l.iter().any(|l| l.ends_with(&line_ends(&crashed)))
                && l.iter().any(|l| l.ends_with(&line_ends(&started)))
        })
        .await;

    // --last-state: the newest event (at the shown severity) of each process, one line each
    let mut last_state = Binary::spawn(&["watch", "--nats-url", &url, "--last-state"]);
    let mut plain = Binary::spawn(&["watch", "--nats-url", &url]);
    for watcher in [&mut last_state, &mut plain] {
        watcher
            .stderr_line_containing("Watching events", LONG)
            .await;
    }
    let mut newest: Vec<LifecycleEvent> = Vec::new();
    for received in &stack.log.received {
        let event = &received.event;
        if event.severity < Severity::Info {
            continue;
        }
        newest.retain(|e| (&e.namespace, &e.process) != (&event.namespace, &event.process));
        newest.push(event.clone());
    }
    assert_eq!(newest.len(), 3, "three processes");
    let lines = last_state.stdout_until(LONG, |l| l.len() == 3).await;
    for (line, event) in lines.iter().zip(&newest) {
        assert!(line.ends_with(&line_ends(event)), "{line} vs {event:?}");
    }

    // then both follow new events only: the next line is the restart, not more history
    compose_client(&stack).restart("web").await.unwrap();
    let restart_line = last_state.stdout_until(LONG, |l| !l.is_empty()).await;
    let plain_line = plain.stdout_until(LONG, |l| !l.is_empty()).await;
    assert!(
        restart_line[0].contains(" default/web "),
        "{restart_line:?}"
    );
    assert_eq!(restart_line, plain_line);

    for mut watcher in [since, last_state, plain] {
        assert_eq!(watcher.terminate().await, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_goes_on_after_nats_restarts() {
    let mut nats = crate::support::nats::NatsServer::start();
    let pc = crate::support::compose::ProcessCompose::start(
        "processes:\n  web:\n    command: \"sleep 1000\"\n",
    )
    .await;
    // The watch first: it finds no stream yet, so it will show everything the new one gets.
    // (Started after the daemon, it could subscribe for new events just after `web started`.)
    let mut watch = Binary::spawn(&["watch", "--nats-url", &nats.url()]);
    watch
        .stderr_line_containing("waiting for stream", LONG)
        .await;
    let daemon = crate::support::daemon::Daemon::spawn(crate::support::daemon::config(
        &pc.url(),
        &nats.url(),
    ));
    watch
        .stdout_until(LONG, |l| {
            l.iter().any(|l| l.ends_with(" default/web started"))
        })
        .await;

    nats.restart();
    pc.restart_process("web").await;
    // The ordered consumer is recreated after two missed idle heartbeats (about 15 s alone,
    // more on a loaded machine).
    let lines = watch
        .stdout_until(Duration::from_secs(60), |l| {
            l.iter().any(|l| l.contains(" default/web restarted"))
        })
        .await;
    assert!(
        lines.iter().all(|l| l.contains(" default/web ")),
        "{lines:?}"
    );
    assert_eq!(watch.terminate().await, Some(0));
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_ack_wait_keeps_its_event_from_a_second_instance() {
    let stack = settled_stack(crate::support::THREE_NAMESPACES).await;
    let mut durable = Durable::new("slow");
    durable.start = Start::All;
    durable.ack_wait = Duration::from_secs(1);
    let calls = AtomicU32::new(0);
    let (done, _) = tokio::sync::watch::channel(false);
    let handler = |_: LifecycleEvent| {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            // The work itself: two and a half ack_waits.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            done.send_replace(true);
            Ok::<(), String>(())
        }
    };
    let stop = || {
        let mut finished = done.subscribe();
        async move {
            let _ = finished.wait_for(|done| *done).await;
        }
    };
    // Two instances of one durable consumer, as for high availability: the second waits with
    // a pull request open, and would get the event if the server thought the first had died.
    let consumer = Consumer::connect_url(&stack.nats_url()).await.unwrap();
    let filter = Filter::default().with_process("crasher").with_type(Crashed);
    let (first, second) = tokio::time::timeout(LONG, async {
        tokio::join!(
            consumer.run_durable(&durable, &filter, handler, stop()),
            consumer.run_durable(&durable, &filter, handler, stop()),
        )
    })
    .await
    .expect("handled within 20s");
    let handled = first.unwrap().handled + second.unwrap().handled;
    assert_eq!((handled, calls.load(Ordering::SeqCst)), (1, 1));

    let client = async_nats::connect(stack.nats_url()).await.unwrap();
    let info = jetstream::new(client)
        .get_stream("PROCESS_EVENTS")
        .await
        .unwrap()
        .consumer_info("slow")
        .await
        .unwrap();
    assert_eq!(
        (info.num_redelivered, info.num_ack_pending, info.num_pending),
        (0, 0, 0),
        "progress acks kept the event from being redelivered: {info:?}"
    );
}
