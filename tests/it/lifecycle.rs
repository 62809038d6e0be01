//! Running as a real daemon: systemd notifications, the watchdog, truthful readiness, metrics,
//! SIGHUP reloads, and secrets kept out of logs.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use pc_eventd_events::event::EventType::*;
use tokio::net::TcpListener;

use crate::support::binary::Binary;
use crate::support::compose::{Options, ProcessCompose};
use crate::support::daemon::{Daemon, config};
use crate::support::events::{EventLog, Reliability, count};
use crate::support::fake_compose::{HEALTHY_BODY, Reply, serve_counting};
use crate::support::nats::NatsServer;
use crate::support::notify_socket::NotifySocket;
use crate::support::{eventually, free_port, http_get, wait_for_http};

const LONG: Duration = Duration::from_secs(20);

/// One sample from `/metrics`, read with a Prometheus text parser.
async fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(port, name, labels)
        .await
        .first()
        .copied()
        .unwrap_or(0.0)
}

/// The sum of every sample of `name` (all its label values).
async fn metric_sum(port: u16, name: &str) -> f64 {
    samples(port, name, &[]).await.iter().sum()
}

async fn samples(port: u16, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let (status, body) = http_get(port, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a plain number"),
        })
        .collect()
}

/// Runs the binary with `file` and its health endpoint on `health`, under a fake systemd
/// notification socket, until it reports READY=1.
async fn run_until_ready(file: &std::path::Path, health: u16) -> (Binary, NotifySocket) {
    let mut notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let daemon = Binary::spawn_with_env(
        &["run", "--config", file.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", &socket),
            ("PC_EVENTD_HEALTH__LISTEN", &format!("127.0.0.1:{health}")),
        ],
    );
    notify.next_containing("READY=1", LONG).await;
    (daemon, notify)
}

/// Sends SIGHUP and waits for RELOADING=1 then READY=1; returns the READY datagram.
async fn reload(daemon: &Binary, notify: &mut NotifySocket) -> String {
    daemon.signal("HUP");
    notify.next_containing("RELOADING=1", LONG).await;
    notify.next_containing("READY=1", LONG).await
}

/// Whether the unlabelled metric `name` of the daemon with its health endpoint on `health`
/// satisfies `done` within [`LONG`].
async fn metric_reaches(health: u16, name: &str, done: impl Fn(f64) -> bool) -> bool {
    labelled_metric_reaches(health, name, &[], done).await
}

/// [`metric_reaches`] for the sample of `name` with `labels`.
async fn labelled_metric_reaches(
    health: u16,
    name: &str,
    labels: &[(&str, &str)],
    done: impl Fn(f64) -> bool,
) -> bool {
    let deadline = Instant::now() + LONG;
    while !done(metric(health, name, labels).await) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Whether `polls` more polls happen within [`LONG`]: with an interval of an hour that takes
/// hours, with 100 ms a second.
async fn polls_again(health: u16, polls: u32) -> bool {
    let before = metric(health, "pc_eventd_polls_total", &[]).await;
    metric_reaches(health, "pc_eventd_polls_total", |n| {
        n >= before + f64::from(polls)
    })
    .await
}

/// The ids of the events waiting in the outboxes under state directory `dir` (no daemon may
/// hold them).
fn outbox_pending(dir: &std::path::Path) -> HashSet<String> {
    let outboxes = std::fs::read_dir(dir.join("outbox")).expect("an outbox directory");
    outboxes
        .flat_map(|entry| {
            let path = entry.expect("an outbox").path();
            let marker: pc_eventd::LossMarker = Box::new(|_| unreachable!("no loss"));
            let outbox = pc_eventd::Outbox::open(&path, 1 << 20, Duration::ZERO, marker)
                .expect("the outbox opens once its daemon is gone");
            outbox
                .peek_after(None, usize::MAX)
                .iter()
                .flat_map(|entry| entry.messages.iter().map(|m| m.id.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Once the outbox of the daemon with its health endpoint on `health` is empty (everything it
/// observed so far is in JetStream): how many of its events JetStream stored, and how many it
/// dropped as duplicates.
async fn published_all(health: u16) -> (f64, f64) {
    // When the stream held everything already, the log is complete before the successor has
    // even opened its endpoint: wait for it first.
    wait_for_http(health, "/metrics", 200).await;
    assert!(
        metric_reaches(health, "pc_eventd_outbox_messages", |n| n == 0.0).await,
        "the outbox never emptied"
    );
    (
        metric_sum(health, "pc_eventd_events_published_total").await,
        metric(health, "pc_eventd_events_deduplicated_total", &[]).await,
    )
}

/// How many of `pending` the stream read by `log` holds already: what a successor that
/// publishes exactly the outbox gets back as duplicates.
fn stored_already(pending: &HashSet<String>, log: &EventLog) -> usize {
    log.received
        .iter()
        .filter(|r| pending.contains(&r.event.id))
        .count()
}

/// A successor daemon with the state directory `dir` and its health endpoint on `health`, to
/// read how many of its publishes JetStream dropped as duplicates.
fn successor(port: &str, url: &str, dir: &std::path::Path, health: u16) -> Binary {
    let listen = format!("127.0.0.1:{health}");
    let [state] = state_dir_env(dir);
    Binary::spawn_with_env(
        &run_args(port, url),
        &[
            state,
            ("PC_EVENTD_HEALTH__ENABLED", "true"),
            ("PC_EVENTD_HEALTH__LISTEN", &listen),
        ],
    )
}

/// The environment that points the binary at `dir` for its state (to restart into it).
fn state_dir_env(dir: &std::path::Path) -> [(&'static str, &str); 1] {
    [(
        "PC_EVENTD_DAEMON__STATE_DIR",
        dir.to_str().expect("a UTF-8 path"),
    )]
}

fn run_args<'a>(pc_port: &'a str, nats_url: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--compose-port",
        pc_port,
        "--nats-url",
        nats_url,
        "--poll-interval",
        "200ms",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_then_reloading_ready_then_stopping() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let mut notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let port = pc.port().to_string();
    let url = nats.url();
    let mut daemon = Binary::spawn_with_env(&run_args(&port, &url), &[("NOTIFY_SOCKET", &socket)]);

    let ready = notify.next_containing("READY=1", LONG).await;
    assert!(ready.contains("1 processes, 0 unhealthy"), "{ready}");
    // READY=1 came only once the stream existed and process-compose had answered
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.get_stream("PROCESS_EVENTS")
        .await
        .expect("the stream exists at READY");

    daemon.signal("HUP");
    let reloading = notify.next_containing("RELOADING=1", LONG).await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notify.next_containing("READY=1", LONG).await;

    assert_eq!(daemon.terminate().await, Some(0));
    notify.next_containing("STOPPING=1", LONG).await;
    assert_eq!(
        notify.lifecycle(),
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_before_ready_does_not_kill_it() {
    // NATS is not there yet: the daemon waits for it, and a reload request waits too.
    let nats_port = free_port().to_string();
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let mut daemon = Binary::spawn(&run_args("1", &nats_url));
    daemon
        .stderr_line_containing("waiting for NATS JetStream", LONG)
        .await;
    daemon.signal("HUP");
    daemon
        .stderr_line_containing("SIGHUP: reloading", LONG)
        .await;
    daemon
        .stderr_line_containing("waiting for NATS JetStream", LONG)
        .await;
    assert_eq!(daemon.terminate().await, Some(0), "alive until SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_petted_only_while_the_loop_moves() {
    // WatchdogSec as systemd would pass it: the daemon pets every half of it.
    const WATCHDOG: Duration = Duration::from_millis(400);
    let nats = NatsServer::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let served = Arc::new(AtomicUsize::new(0));
    let mut script = vec![Reply::Json(200, HEALTHY_BODY); 10];
    script.push(Reply::Stall);
    tokio::spawn(serve_counting(listener, script, served.clone()));

    let mut notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let url = nats.url();
    let mut daemon = Binary::spawn_with_env(
        &run_args(&port, &url),
        &[
            ("NOTIFY_SOCKET", &socket),
            ("WATCHDOG_USEC", &WATCHDOG.as_micros().to_string()),
            // the stall must wedge the loop, not time out
            ("PC_EVENTD_PROCESS_COMPOSE__REQUEST_TIMEOUT", "1h"),
            ("PC_EVENTD_PROCESS_COMPOSE__MODE", "poll"),
        ],
    );
    for _ in 0..3 {
        notify.next_containing("WATCHDOG=1", LONG).await;
    }
    assert!(
        eventually(LONG, || served.load(Ordering::SeqCst) > 10).await,
        "the stall began"
    );
    // A ping already on its way may still land; after that, silence for longer than WatchdogSec,
    // which is what systemd itself takes for a hung service (a watchdog is judged by a window:
    // no later event can prove it silent).
    notify.collect_for(WATCHDOG).await;
    let later = notify.collect_for(WATCHDOG * 3).await;
    assert!(!later.iter().any(|m| m.contains("WATCHDOG=1")), "{later:?}");
    // and the wedged loop still stops promptly on SIGTERM
    assert_eq!(daemon.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_nats_and_metrics_follow_events() {
    let began = Instant::now();
    let mut nats = NatsServer::start();
    let pc = ProcessCompose::start(
        "processes:\n  web:\n    command: \"sleep 1000\"\n  job:\n    command: \"sleep 1; exit 3\"\n",
    )
    .await;
    let health = free_port();
    let mut config = config(&pc.url(), &nats.url());
    config.health.enabled = true;
    config.health.listen = ([127, 0, 0, 1], health).into();
    let daemon = Daemon::spawn(config);

    wait_for_http(health, "/readyz", 200).await;
    assert_eq!(wait_for_http(health, "/healthz", 200).await, "ok\n");
    nats.stop();
    let body = wait_for_http(health, "/readyz", 503).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert!(body["failing"]["nats"].is_string(), "{body}");
    nats.restart();
    wait_for_http(health, "/readyz", 200).await;

    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("job", Crashed).await;
    // The counter follows the server's acknowledgement, which a consumer may see the event
    // before: wait for it rather than read it once.
    let published = "pc_eventd_events_published_total";
    assert!(labelled_metric_reaches(health, published, &[("type", "crashed")], |n| n >= 1.0).await);
    assert_eq!(metric(health, published, &[("type", "crashed")]).await, 1.0);
    assert!(metric(health, published, &[("type", "started")]).await >= 2.0);
    assert!(metric(health, "pc_eventd_polls_total", &[]).await >= 1.0);
    assert!(metric(health, "pc_eventd_nats_reconnects_total", &[]).await >= 1.0);
    assert_eq!(metric(health, "pc_eventd_nats_connected", &[]).await, 1.0);
    assert_eq!(metric(health, "pc_eventd_processes", &[]).await, 2.0);
    // No older than the daemon itself: it counts from a poll of this daemon's.
    let since = metric(health, "pc_eventd_seconds_since_last_good_poll", &[]).await;
    assert!(
        (0.0..=began.elapsed().as_secs_f64()).contains(&since),
        "{since}"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_poll_interval_and_keeps_the_old_config_on_a_broken_file() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(
        "processes:\n  web:\n    command: \"trap 'exit 0' TERM; while true; do sleep 0.1; done\"\n",
    )
    .await;
    let health = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pc-eventd.toml");
    let write_config = |poll_interval: &str| {
        std::fs::write(
            &file,
            format!(
                "[process_compose]\nmode = \"poll\"\nurl = \"{}\"\npoll_interval = \"{poll_interval}\"\n\
                 max_backoff = \"1h\"\n\
                 [nats]\nurl = \"{}\"\n[health]\nlisten = \"127.0.0.1:{health}\"\n",
                pc.url(),
                nats.url()
            ),
        )
        .unwrap();
    };
    write_config("1h");
    let (mut daemon, mut notify) = run_until_ready(&file, health).await;
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("web", Started).await;

    write_config("100ms");
    reload(&daemon, &mut notify).await;
    assert!(
        polls_again(health, 10).await,
        "10 more polls: the 100ms interval took effect"
    );
    assert_eq!(
        metric(health, "pc_eventd_reloads_total", &[("result", "ok")]).await,
        1.0
    );

    std::fs::write(&file, "[nats]\nurll = \"nats://nowhere:4222\"\n").unwrap();
    let ready = reload(&daemon, &mut notify).await;
    assert!(
        ready.contains("reload failed, old config kept: nats.urll"),
        "{ready}"
    );
    assert_eq!(
        metric(health, "pc_eventd_reloads_total", &[("result", "failed")]).await,
        1.0
    );
    let line = daemon.stderr_line_containing("reload failed", LONG).await;
    assert!(
        line.contains("nats.urll") && line.contains("pc-eventd.toml"),
        "{line}"
    );

    // the old configuration is still running: events flow, polls stay fast
    pc.stop_process("web").await;
    log.wait_for("web", Stopped).await;
    assert!(polls_again(health, 10).await, "still polling every 100ms");
    assert_eq!(daemon.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs() {
    let real = "the-real-token-0123456789abcdef";
    let wrong = "a-wrong-token-9876543210fedcba";
    let nats = NatsServer::start();
    let pc = ProcessCompose::start_with(
        "processes:\n  web:\n    command: \"sleep 1000\"\n",
        Options {
            token: Some(real.into()),
            ..Options::default()
        },
    )
    .await;
    let port = pc.port().to_string();
    let url = nats.url();
    let mut daemon = Binary::spawn_with_env(
        &run_args(&port, &url),
        &[
            ("PC_EVENTD_PROCESS_COMPOSE__TOKEN", wrong),
            ("RUST_LOG", "trace"),
        ],
    );
    let line = daemon
        .stderr_line_containing("process-compose unavailable", LONG)
        .await;
    assert!(line.contains("unauthorized"), "{line}");
    assert_eq!(daemon.terminate().await, Some(0));
    let mut all = daemon.stderr_seen.clone();
    all.extend(daemon.rest_of_stderr().await);
    let all = all.join("\n");
    assert!(all.lines().count() > 20, "trace logging was on");
    assert!(
        !all.contains(wrong) && !all.contains(real),
        "a token leaked into the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_new_nats_settings_moves_to_the_new_server() {
    let first = NatsServer::start();
    let second = NatsServer::start();
    let pc = ProcessCompose::start(
        "processes:\n  web:\n    command: \"trap 'exit 0' TERM; while true; do sleep 0.1; done\"\n",
    )
    .await;
    let health = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pc-eventd.toml");
    let write_config = |nats_url: &str| {
        let text = format!(
            "[process_compose]\nurl = \"{}\"\npoll_interval = \"200ms\"\n[nats]\nurl = \"{nats_url}\"\n",
            pc.url()
        );
        std::fs::write(&file, text).unwrap();
    };
    write_config(&first.url());
    let (mut daemon, mut notify) = run_until_ready(&file, health).await;
    EventLog::open(&first.url())
        .await
        .wait_for("web", Started)
        .await;

    write_config(&second.url());
    reload(&daemon, &mut notify).await;
    pc.stop_process("web").await;
    let mut log = EventLog::open(&second.url()).await;
    log.wait_for("web", Stopped).await;
    assert!(
        log.of("web", Started).is_empty(),
        "no re-announcement after a reload: {}",
        log.dump()
    );
    // the replaced connection's closing does not make the daemon look unready
    wait_for_http(health, "/readyz", 200).await;
    assert_eq!(daemon.terminate().await, Some(0));
}

/// process-compose running `processes` long sleepers, `p0000` on, every one of them running
/// before a daemon looks: the expected events are exactly one `started` and one
/// `status_changed` each.
async fn all_running(processes: usize) -> ProcessCompose {
    let mut project = String::from("processes:\n");
    for i in 0..processes {
        project.push_str(&format!("  p{i:04}:\n    command: \"sleep 1000\"\n"));
    }
    let pc = ProcessCompose::start(&project).await;
    let running = "\"status\":\"Running\"";
    let deadline = Instant::now() + Duration::from_secs(60);
    while pc
        .request("GET", "/processes")
        .await
        .map_or(0, |(_, body)| body.matches(running).count())
        < processes
    {
        assert!(
            Instant::now() < deadline,
            "process-compose never ran them all"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_burst_then_restart_loses_and_repeats_nothing() {
    // Large enough that publishing the announcement outlasts the kill that follows its first
    // event (checked below: the outbox still holds events when the first daemon is gone).
    const PROCESSES: usize = 2000;
    let nats = NatsServer::start();
    let pc = all_running(PROCESSES).await;
    let port = pc.port().to_string();
    let url = nats.url();
    // Both runs share a state directory: the second finds what the first left in its outbox.
    let state_dir = crate::support::state_dir();
    let state_env = state_dir_env(&state_dir);
    let mut first = Binary::spawn_with_env(&run_args(&port, &url), &state_env);
    let mut log = EventLog::open(&nats.url()).await;
    // the first events are in: the announcement of 300 processes is under way
    log.wait_until("a first started", LONG, |r| {
        r.iter().any(|r| r.event.event_type == Started)
    })
    .await;
    first.signal("KILL");
    first.exited().await;
    let pending = outbox_pending(&state_dir);
    assert!(
        !pending.is_empty(),
        "killed mid-burst: events still waited in the outbox"
    );
    log.read_to_end().await;
    let duplicates = stored_already(&pending, &log);

    let health = free_port();
    let mut second = successor(&port, &url, &state_dir, health);
    let all = |r: &[crate::support::events::Received]| {
        count(r, None, Started) >= PROCESSES && count(r, None, StatusChanged) >= PROCESSES
    };
    log.wait_until("every process announced", LONG, all).await;
    // It published exactly what waited in the outbox (JetStream dropped what of it was stored
    // already) and derived nothing again: its snapshot included those entries' records.
    let (published, deduplicated) = published_all(health).await;
    assert_eq!(published + deduplicated, pending.len() as f64);
    assert_eq!(deduplicated, duplicates as f64);
    assert_eq!(second.terminate().await, Some(0));
    log.read_to_end().await;
    let started = count(&log.received, None, Started);
    assert_eq!(started, PROCESSES, "each process announced once");
    let expected = 2 * PROCESSES;
    assert_eq!(log.received.len(), expected, "nothing else, nothing twice");
    let row = log.report(
        "pc-eventd kill -9 while announcing 2000 processes, then restarted",
        expected,
        |_| true,
    );
    assert_eq!(row, Reliability::exact(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_the_outbox_survive_kill_9_while_nats_is_down() {
    let mut nats = NatsServer::start();
    let pc = ProcessCompose::start(
        r#"
processes:
  flaky:
    command: "sleep 0.3; exit 5"
    availability:
      restart: on_failure
      max_restarts: 5
      backoff_seconds: 1
"#,
    )
    .await;
    let port = pc.port().to_string();
    let url = nats.url();
    let state_dir = crate::support::state_dir();
    let state_env = state_dir_env(&state_dir);
    let mut first = Binary::spawn_with_env(&run_args(&port, &url), &state_env);
    let mut log = EventLog::open(&url).await;
    log.wait_for("flaky", Crashed).await;
    nats.stop();
    // The whole crash loop happens while NATS is away; then the daemon dies without a word.
    pc.wait_for_status("flaky", "Completed", LONG).await;
    // {state_dir}/outbox/{source}/*.log
    let queued = || {
        let files = |dir: &std::path::Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect::<Vec<_>>()
        };
        files(&state_dir.join("outbox"))
            .iter()
            .flat_map(|source| files(source))
            .filter(|path| path.extension() == Some("log".as_ref()))
            .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    assert!(
        eventually(LONG, || queued() > 0).await,
        "the events wait in the outbox"
    );
    first.signal("KILL");
    first.exited().await;
    let pending = outbox_pending(&state_dir);
    nats.restart();
    // Of what waits in the outbox, what the first daemon stored before NATS went away (its
    // acknowledgement lost with the connection) is all that may come back as a duplicate.
    let mut log = EventLog::open(&url).await;
    log.read_to_end().await;
    let duplicates = stored_already(&pending, &log);

    let health = free_port();
    let mut second = successor(&port, &url, &state_dir, health);
    let mut log = EventLog::open(&url).await;
    log.wait_until("the last crash", LONG, |r| {
        count(r, Some("flaky"), Crashed) >= 6
    })
    .await;
    // The successor's snapshot included the records of what waited in the outbox, so it
    // derived none of those events again: no duplicate beyond what was stored before.
    let deduplicated = published_all(health).await.1;
    assert_eq!(deduplicated, duplicates as f64);
    assert_eq!(second.terminate().await, Some(0));
    log.read_to_end().await;
    assert_eq!(
        count(&log.received, Some("flaky"), Crashed),
        6,
        "{}",
        log.dump()
    );
    assert_eq!(
        count(&log.received, Some("flaky"), Restarted),
        5,
        "{}",
        log.dump()
    );
    assert_eq!(
        count(&log.received, Some("flaky"), Started),
        1,
        "{}",
        log.dump()
    );
    let ids: std::collections::HashSet<_> = log.received.iter().map(|r| &r.event.id).collect();
    assert_eq!(ids.len(), log.received.len(), "no event stored twice");
    let seqs: Vec<u64> = log.received.iter().map(|r| r.event.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "stream order is event order: {seqs:?}"
    );
    assert!(log.losses.is_empty(), "nothing was lost");
    let row = log.report(
        "pc-eventd kill -9 while NATS is down during a crash loop, then both back",
        11,
        |e| matches!(e.event_type, Crashed | Restarted),
    );
    assert_eq!(row, Reliability::exact(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_wait_for_the_outbox_lock_nats_or_process_compose() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let (port, url) = (pc.port().to_string(), nats.url());
    // Each wait below would last ten minutes if a signal did not end it (the 10 s in
    // `terminate` is only how long the test waits for the exit).
    let patient = [
        ("PC_EVENTD_DAEMON__SHUTDOWN_TIMEOUT", "10min"),
        ("PC_EVENTD_NATS__ACK_TIMEOUT", "10min"),
    ];

    // A lock held by a running daemon.
    let state_dir = crate::support::state_dir();
    let [state] = state_dir_env(&state_dir);
    let env = [&patient[..], &[state]].concat();
    let mut holder = Binary::spawn_with_env(&run_args(&port, &url), &env);
    EventLog::open(&url).await.wait_for("web", Started).await;
    let mut second = Binary::spawn_with_env(&run_args(&port, &url), &env);
    second
        .stderr_line_containing("the outbox is locked by another pc-eventd", LONG)
        .await;
    assert_eq!(second.terminate().await, Some(0));
    assert!(
        holder.is_running(),
        "the lock was still held when it stopped waiting"
    );
    assert_eq!(holder.terminate().await, Some(0));

    // NATS that does not answer, and process-compose that is not there.
    let nobody = format!("nats://127.0.0.1:{}", free_port());
    let mut no_nats = Binary::spawn_with_env(&run_args(&port, &nobody), &patient);
    no_nats
        .stderr_line_containing("pc-eventd running", LONG)
        .await;
    assert_eq!(no_nats.terminate().await, Some(0));
    let missing = free_port().to_string();
    let mut no_compose = Binary::spawn_with_env(
        &run_args(&missing, &url),
        &[
            ("PC_EVENTD_PROCESS_COMPOSE__MAX_BACKOFF", "10min"),
            ("PC_EVENTD_PROCESS_COMPOSE__POLL_INTERVAL", "10min"),
        ],
    );
    no_compose
        .stderr_line_containing("process-compose unavailable", LONG)
        .await;
    assert_eq!(no_compose.terminate().await, Some(0));
}

/// A daemon on `state_dir` that has published everything, then, NATS gone, queued the stop
/// of `process`; signalled with SIGTERM.
async fn queued_while_nats_is_down(
    nats: &mut NatsServer,
    pc: &ProcessCompose,
    state_dir: &std::path::Path,
    process: &str,
    shutdown_timeout: &str,
) -> Binary {
    let health = free_port();
    let listen = format!("127.0.0.1:{health}");
    let [state] = state_dir_env(state_dir);
    let daemon = Binary::spawn_with_env(
        &run_args(&pc.port().to_string(), &nats.url()),
        &[
            state,
            ("PC_EVENTD_HEALTH__ENABLED", "true"),
            ("PC_EVENTD_HEALTH__LISTEN", &listen),
            ("PC_EVENTD_DAEMON__SHUTDOWN_TIMEOUT", shutdown_timeout),
            // A publish fails soon, rather than waiting for NATS to come back.
            ("PC_EVENTD_NATS__ACK_TIMEOUT", "500ms"),
        ],
    );
    wait_for_http(health, "/readyz", 200).await;
    published_all(health).await;
    nats.stop();
    pc.stop_process(process).await;
    // Queued, and a publish of it failed: the relay waits to retry when the signal comes.
    assert!(
        metric_reaches(health, "pc_eventd_publish_errors_total", |n| n > 0.0).await,
        "no publish failed"
    );
    assert!(metric(health, "pc_eventd_outbox_messages", &[]).await > 0.0);
    daemon.signal("TERM");
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_outbox_and_says_what_it_could_not() {
    const LEFT_BEHIND: &str = "stopping with events NATS has not acknowledged";
    let mut nats = NatsServer::start();
    let pc = all_running(2).await;
    let state_dir = crate::support::state_dir();

    // NATS back within shutdown_timeout: the relay publishes what waited before it exits.
    let mut first = queued_while_nats_is_down(&mut nats, &pc, &state_dir, "p0000", "1min").await;
    nats.restart();
    assert_eq!(first.exited_within(LONG).await, Some(0));
    assert!(
        outbox_pending(&state_dir).is_empty(),
        "the outbox was drained"
    );
    let mut log = EventLog::open(&nats.url()).await;
    log.wait_for("p0000", Stopped).await;
    let said = first.rest_of_stderr().await.join("\n");
    assert!(!said.contains(LEFT_BEHIND), "{said}");

    // NATS still gone when shutdown_timeout runs out: the rest stays for the next start, and
    // the daemon says so.
    let mut second = queued_while_nats_is_down(&mut nats, &pc, &state_dir, "p0001", "1s").await;
    assert_eq!(second.exited_within(LONG).await, Some(0));
    assert!(
        !outbox_pending(&state_dir).is_empty(),
        "kept for the next start"
    );
    let said = second.rest_of_stderr().await.join("\n");
    assert!(said.contains(LEFT_BEHIND), "{said}");
}
