//! Benchmarks of pc-eventd against real peers: a `nats-server -js` and the real process-compose
//! v1.122.0, as scripts/install-peers.sh installs them.
//!
//! Run it through `scripts/bench.sh`, which installs the peers, runs this bench and rewrites the
//! results section of docs/benchmarks.md. `cargo bench --bench pipeline -- latency crashloop`
//! runs only the named sections (latency, crashloop, throughput, resources, conditions, scale).
//!
//! This is a measurement, not a test: nothing here asserts on a time. The results go to stdout
//! as Markdown (progress to stderr); the run fails only when a peer cannot be set up.
//!
//! 1. Detection latency: a process writes `date +%s%N` to a file just before it exits 3; a core
//!    NATS subscriber on `core.process.*.*.crashed` notes when the event arrives.
//! 2. A crash loop of 21 runs (20 policy restarts): which `crashed` / `restarted` events reach
//!    the JetStream stream.
//! 3. Publish throughput of the daemon's own path (`diff` + serialize + `publish_batch`, window
//!    256) against raw pipelined async-nats JetStream publishing.
//! 4. RSS and CPU of the release binary, idle and tracking 1000 processes.
//!
//!    4b. (`conditions`) What sampling the usage costs at 1000 processes in stream mode, over
//!    one 60 s window per run: process-compose alone; the daemon without rules (it reads
//!    `GET /processes` every `reconcile_interval`, 30 s); and with a pressure and a silence rule
//!    for every process and `health.process_metrics`, at `sample_interval` 10 s (the default)
//!    and 2 s. For each, the daemon's RSS and CPU and process-compose's own CPU and RSS (it
//!    measures each process's memory and CPU when polled), the reads in the window, and the
//!    ratios to the run without rules and the CPU time of one read.
//! 5. Scale: as many processes as process-compose runs here (up to 5000) in stream mode: the time
//!    to announce them all, one crash among them (latency), RSS and CPU.
//!
//! Sections 1, 2, 4, 4b and 5 run the release binary (`CARGO_BIN_EXE_pc-eventd`) as a separate process,
//! as it is deployed; section 3 calls the library in-process.

// The shared test support (tests/it/support) is compiled here in whole, but this bench uses only
// part of it (the nats-server and process-compose guards, the stream reader, the HTTP helpers):
// the rest would be reported as dead code.
#![allow(dead_code)]

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use pc_eventd::Outbox;
use pc_eventd::Relay;
use pc_eventd::StateStore;
use pc_eventd::Status;
use pc_eventd::{DiffContext, ProcessSettings, Snapshot, diff};
use pc_eventd_events::event::{EventType, LifecycleEvent, SubjectScheme};
use pc_eventd_events::nats::NatsConfig;
use pc_eventd_events::process_compose::model::{ProcessState, ProcessStatus, Readiness};
use pc_eventd_events::publish::{Message, Publisher};

use common::{
    DaemonProcess, Mode, Result, clock_ticks_per_second, compose_pid, cpu_ticks, metric_value,
    status_kb,
};
use support::compose::ProcessCompose;
use support::events::EventLog;
use support::nats::NatsServer;

fn main() -> ExitCode {
    common::main_of("pipeline", run())
}

async fn run() -> Result<String> {
    // `cargo bench` passes `--bench`; anything else not starting with `-` names a section.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |section: &str| only.is_empty() || only.iter().any(|s| s == section);
    let mut report = Report::default();
    let started = Instant::now();

    if wanted("latency") {
        for mode in Mode::ALL {
            progress(&format!("latency, {}", mode.label()));
            let result = latency(mode).await?;
            report.latency.push((mode, result));
        }
    }
    if wanted("crashloop") {
        for mode in Mode::ALL {
            progress(&format!("crash loop, {}", mode.label()));
            let result = crash_loop(mode).await?;
            report.crash_loop.push((mode, result));
        }
    }
    if wanted("throughput") {
        progress("publish throughput");
        report.throughput = Some(throughput().await?);
    }
    if wanted("resources") {
        for (processes, mode) in [
            (IDLE_PROCESSES, Mode::Stream),
            (IDLE_PROCESSES, Mode::Poll(Duration::from_secs(2))),
            (MANY_PROCESSES, Mode::Stream),
            (MANY_PROCESSES, Mode::Poll(Duration::from_secs(2))),
        ] {
            progress(&format!(
                "RSS and CPU, {processes} processes, {}",
                mode.label()
            ));
            let result = resources(processes, mode).await?;
            report.resources.push((processes, mode, result));
        }
    }
    if wanted("conditions") {
        for sampling in Sampling::ALL {
            progress(&format!(
                "conditions, {CONDITIONS_PROCESSES} processes, {}",
                sampling.label()
            ));
            report.conditions.push(conditions(sampling).await?);
        }
    }
    if wanted("scale") {
        for processes in SCALE_POINTS {
            progress(&format!("scale, {processes} processes, stream"));
            let result = scale(processes).await.map_err(|err| err.to_string());
            let failed = result.is_err();
            report.scale.push((processes, result));
            if failed {
                break;
            }
        }
    }
    progress(&format!("done in {:.0?}", started.elapsed()));
    Ok(report.markdown())
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

// ------------------------------------------------------------------------------------------
// 1. Detection latency

const LATENCY_PROCESSES: usize = 25;
/// Process i crashes `LATENCY_FIRST + i × LATENCY_STAGGER` seconds after its start. The stagger
/// is no divisor of either poll interval, so crashes fall at every phase of the poll cycle.
const LATENCY_FIRST: f64 = 1.0;
const LATENCY_STAGGER: f64 = 0.41;

struct Latency {
    /// Milliseconds from the process's exit timestamp to the event's arrival, one per crash.
    samples_ms: Vec<f64>,
    expected: usize,
    /// Events received for a process that had written no timestamp (should be none).
    unmatched: usize,
    /// Processes with more than one `crashed` event (should be none).
    repeated: usize,
    synthetic: usize,
}

fn latency_project() -> String {
    let mut project = String::from("processes:\n");
    for i in 0..LATENCY_PROCESSES {
        let delay = LATENCY_FIRST + i as f64 * LATENCY_STAGGER;
        // Disabled, so that each starts (from the bench) only once the daemon is watching.
        let _ = write!(
            project,
            "  c{i:02}:\n    command: \"sleep {delay:.2}; date +%s%N > $WORK/exit-c{i:02}; exit 3\"\n    \
             disabled: true\n    availability:\n      restart: \"no\"\n"
        );
    }
    project
}

async fn latency(mode: Mode) -> Result<Latency> {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(&latency_project()).await;
    let client = async_nats::connect(nats.url()).await?;
    let mut crashes = client.subscribe("core.process.*.*.crashed").await?;
    client.flush().await?;
    let mut daemon = DaemonProcess::spawn(&pc.url(), &nats.url(), mode)?;
    daemon.wait_ready(Duration::from_secs(30)).await?;

    // The last crash comes ~11 s after the starts, plus up to one poll interval.
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(LATENCY_FIRST + LATENCY_PROCESSES as f64 * LATENCY_STAGGER)
        + Duration::from_secs(15);
    let collector = tokio::spawn(async move {
        let mut arrivals: Vec<(i128, Bytes)> = Vec::new();
        while arrivals.len() < LATENCY_PROCESSES {
            match tokio::time::timeout_at(deadline, crashes.next()).await {
                Ok(Some(message)) => arrivals.push((now_ns(), message.payload)),
                _ => break,
            }
        }
        arrivals
    });
    for i in 0..LATENCY_PROCESSES {
        pc.start_process(&format!("c{i:02}")).await;
    }
    let arrivals = collector.await?;

    let mut result = Latency {
        samples_ms: Vec::new(),
        expected: LATENCY_PROCESSES,
        unmatched: 0,
        repeated: 0,
        synthetic: 0,
    };
    let mut seen = std::collections::HashSet::new();
    for (arrived, payload) in arrivals {
        let event: LifecycleEvent = serde_json::from_slice(&payload)?;
        if event.synthetic {
            result.synthetic += 1;
        }
        if !seen.insert(event.process.clone()) {
            result.repeated += 1;
            continue;
        }
        match exit_timestamp(pc.work_dir(), &event.process) {
            Some(exited) => result
                .samples_ms
                .push((arrived - exited) as f64 / 1_000_000.0),
            None => result.unmatched += 1,
        }
    }
    drop(daemon);
    Ok(result)
}

fn exit_timestamp(dir: &Path, process: &str) -> Option<i128> {
    std::fs::read_to_string(dir.join(format!("exit-{process}")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

// ------------------------------------------------------------------------------------------
// 2. A crash loop

const CRASH_LOOP_RESTARTS: u32 = 20;

const CRASH_LOOP_PROJECT: &str = r#"processes:
  flaky:
    command: "sleep 0.2; exit 3"
    # Disabled, so that it starts (from the bench) only once the daemon is watching.
    disabled: true
    availability:
      restart: on_failure
      max_restarts: 20
      backoff_seconds: 1
"#;

struct CrashLoop {
    /// What process-compose reports at the end: (status, restarts, exit code).
    actual: (String, u64, i64),
    crashed: usize,
    restarted: usize,
    restarts_delta: u64,
    /// Time from the start request to process-compose reporting the final `Completed`.
    duration: Duration,
}

async fn crash_loop(mode: Mode) -> Result<CrashLoop> {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(CRASH_LOOP_PROJECT).await;
    let mut daemon = DaemonProcess::spawn(&pc.url(), &nats.url(), mode)?;
    daemon.wait_ready(Duration::from_secs(30)).await?;
    let mut log = EventLog::open(&nats.url()).await;

    let started = Instant::now();
    pc.start_process("flaky").await;
    // process-compose is the truth: wait for it to report the loop over.
    let deadline = started + Duration::from_secs(90);
    let actual = loop {
        let (status, body) = pc.request("GET", "/process/flaky").await?;
        if status != 200 {
            return Err(format!("GET /process/flaky: {status} {body}").into());
        }
        let state: serde_json::Value = serde_json::from_str(&body)?;
        let actual = (
            state["status"].as_str().unwrap_or_default().to_owned(),
            state["restarts"].as_u64().unwrap_or_default(),
            state["exit_code"].as_i64().unwrap_or_default(),
        );
        if actual.0 == "Completed" || Instant::now() >= deadline {
            break actual;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let duration = started.elapsed();
    // The daemon saw the end (its event of the final `Completed` is in); stopped, it has
    // published everything, and the stream holds the whole story.
    log.wait_until("the final crash", Duration::from_secs(30), |r| {
        r.iter()
            .any(|r| r.event.process == "flaky" && r.event.state.status == "Completed")
    })
    .await;
    drop(daemon);
    log.read_to_end().await;

    let crashed = log.of("flaky", EventType::Crashed).len();
    let restarted = log.of("flaky", EventType::Restarted);
    Ok(CrashLoop {
        actual,
        crashed,
        restarted: restarted.len(),
        restarts_delta: restarted
            .iter()
            .map(|e| u64::from(e.restarts_delta.unwrap_or(0)))
            .sum(),
        duration,
    })
}

// ------------------------------------------------------------------------------------------
// 3. Publish throughput

const THROUGHPUT_PROCESSES: usize = 1000;
const THROUGHPUT_EVENTS: usize = 20_000;
/// The daemon's publish window (`PUBLISH_WINDOW` in src/daemon.rs, which is private).
const WINDOW: usize = 256;
const THROUGHPUT_REPEATS: usize = 5;

struct Throughput {
    events: usize,
    rounds: usize,
    payload_bytes: usize,
    /// Events per second of each repetition.
    pipeline: Vec<f64>,
    raw: Vec<f64>,
    duplicates: usize,
}

/// One observation of `THROUGHPUT_PROCESSES` processes per round: the first announces them
/// all (started, status_changed, unhealthy), then every round flips readiness (healthy /
/// unhealthy) and every third also restarts each process by policy (crashed, restarted).
fn throughput_rounds() -> Vec<Vec<ProcessState>> {
    let mut processes: Vec<ProcessState> = (0..THROUGHPUT_PROCESSES)
        .map(|i| ProcessState {
            name: format!("svc-{i:04}"),
            status: ProcessStatus::Running,
            is_ready: Readiness::NotReady,
            has_ready_probe: true,
            pid: 10_000 + i as i64,
            process_start_time: Some(format!("2026-01-01T00:00:00.{i:09}Z")),
            ..ProcessState::default()
        })
        .collect();
    let mut rounds = vec![processes.clone()];
    // More rounds than needed; the loop below keeps as many as make `THROUGHPUT_EVENTS`.
    for round in 1..=64 {
        for p in &mut processes {
            p.is_ready = match p.is_ready {
                Readiness::Ready => Readiness::NotReady,
                _ => Readiness::Ready,
            };
            if round % 3 == 0 {
                p.restarts += 1;
                p.exit_code = 3;
                p.pid += THROUGHPUT_PROCESSES as i64;
            }
        }
        rounds.push(processes.clone());
    }
    // Keep as many rounds as make `THROUGHPUT_EVENTS`.
    let subjects = SubjectScheme::default();
    let ctx = diff_context("count", &subjects);
    let mut snapshot = Snapshot::default();
    let mut total = 0;
    let mut keep = 0;
    for observed in &rounds {
        let (next, events) = diff(&snapshot, observed, &ctx);
        snapshot = next;
        total += events.len();
        keep += 1;
        if total >= THROUGHPUT_EVENTS {
            break;
        }
    }
    rounds.truncate(keep);
    rounds
}

fn diff_context<'a>(source: &'a str, subjects: &'a SubjectScheme) -> DiffContext<'a> {
    static SETTINGS: std::sync::LazyLock<ProcessSettings> =
        std::sync::LazyLock::new(ProcessSettings::default);
    DiffContext {
        source,
        subjects,
        observed_at: SystemTime::now(),
        synthetic: true,
        lag: Duration::from_secs(2),
        sampled: true,
        settings: &SETTINGS,
    }
}

/// The daemon's path, as the daemon runs it: one task diffs each observation and writes its
/// events to an outbox (default size and fsync policy) while the daemon's [`Relay`] publishes
/// from there with 256 acks in flight, every ack awaited, then saves the changed processes'
/// records to a KV bucket and acknowledges the entries in the outbox. Timed until the outbox is
/// empty. `source` makes the ids (and the records' keys) unique per run.
async fn pipeline_pass(
    publisher: &Publisher,
    rounds: &[Vec<ProcessState>],
    source: &str,
) -> Result<(usize, usize, Duration)> {
    let subjects = SubjectScheme::default();
    let dir = tempfile::tempdir()?;
    let defaults = pc_eventd::OutboxConfig::default();
    let outbox = Arc::new(std::sync::Mutex::new(Outbox::open(
        dir.path(),
        defaults.max_bytes,
        defaults.fsync_interval,
        Box::new(|_| unreachable!("the bench never fills the outbox")),
    )?));
    let status = Arc::new(Status::default());
    let store = StateStore::open(publisher.jetstream(), "BENCH_STATE", 1, source).await?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let (_publishers, receiver) = tokio::sync::watch::channel(Some(publisher.clone()));
    let finish = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let relay = tokio::spawn(
        Relay::new(
            outbox.clone(),
            wake.clone(),
            receiver,
            Arc::new(tokio::sync::Mutex::new(Some(store))),
            status.clone(),
            Duration::from_secs(120),
        )
        .run(finish.clone()),
    );
    let mut snapshot = Snapshot::default();
    let mut published = 0;
    for observed in rounds {
        let ctx = diff_context(source, &subjects);
        let (next, events) = diff(&snapshot, observed, &ctx);
        let records = next.records(snapshot.changed_names(&next));
        outbox
            .lock()
            .unwrap()
            .push(events.iter().map(Message::of).collect(), records)?;
        wake.notify_one();
        published += events.len();
        snapshot = next;
    }
    // The relay empties the outbox before it ends.
    finish.cancel();
    relay.await?;
    let elapsed = started.elapsed();
    let left = outbox.lock().unwrap().pending_messages();
    let metrics = &status.metrics;
    if left > 0 || metrics.events_dropped.get() > 0 || metrics.publish_errors.get() > 0 {
        return Err(format!(
            "the relay left {left} events, dropped {}, failed {} publishes",
            metrics.events_dropped.get(),
            metrics.publish_errors.get()
        )
        .into());
    }
    let duplicates = usize::try_from(metrics.events_deduplicated.get())?;
    Ok((published, duplicates, elapsed))
}

/// Raw async-nats: the same subjects and payloads, already serialized, with unique
/// `Nats-Msg-Id`s, published with 256 acks in flight, every ack awaited.
async fn raw_pass(
    js: &jetstream::Context,
    messages: &[(String, Bytes)],
    run: &str,
) -> Result<(usize, usize, Duration)> {
    let mut in_flight: VecDeque<jetstream::context::PublishAckFuture> =
        VecDeque::with_capacity(WINDOW);
    let mut duplicates = 0;
    let started = Instant::now();
    for (i, (subject, payload)) in messages.iter().enumerate() {
        if in_flight.len() >= WINDOW
            && let Some(ack) = in_flight.pop_front()
        {
            duplicates += usize::from(ack.await?.duplicate);
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("raw-{run}-{i}").as_str());
        in_flight.push_back(
            js.publish_with_headers(subject.clone(), headers, payload.clone())
                .await?,
        );
    }
    for ack in in_flight {
        duplicates += usize::from(ack.await?.duplicate);
    }
    Ok((messages.len(), duplicates, started.elapsed()))
}

async fn throughput() -> Result<Throughput> {
    let nats = NatsServer::start();
    let mut config = NatsConfig {
        url: nats.url(),
        ..NatsConfig::default()
    };
    // One file-storage stream (the default) in the server's temp store, for both paths.
    config.stream.storage = pc_eventd_events::nats::Storage::File;
    let publisher = Publisher::connect(&config, |_: &async_nats::Event| {}).await?;
    publisher.ensure_stream(&config.stream).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(config.ack_timeout)
        .build(async_nats::connect(nats.url()).await?);

    let rounds = throughput_rounds();
    // The raw path's messages: exactly the pipeline's subjects and payloads.
    let subjects = SubjectScheme::default();
    let mut snapshot = Snapshot::default();
    let mut messages = Vec::new();
    for observed in &rounds {
        let (next, events) = diff(&snapshot, observed, &diff_context("raw", &subjects));
        for event in events {
            messages.push((
                event.subject.clone(),
                Bytes::from(serde_json::to_vec(&event)?),
            ));
        }
        snapshot = next;
    }
    let payload_bytes = messages.iter().map(|(_, p)| p.len()).sum::<usize>() / messages.len();

    // Warm up both paths (connections, the stream's first blocks), then alternate.
    pipeline_pass(&publisher, &rounds[..1], "warm-up").await?;
    raw_pass(&js, &messages[..2000.min(messages.len())], "warm-up").await?;
    let mut result = Throughput {
        events: messages.len(),
        rounds: rounds.len(),
        payload_bytes,
        pipeline: Vec::new(),
        raw: Vec::new(),
        duplicates: 0,
    };
    for repeat in 0..THROUGHPUT_REPEATS {
        let (sent, duplicates, took) = raw_pass(&js, &messages, &repeat.to_string()).await?;
        result.raw.push(sent as f64 / took.as_secs_f64());
        result.duplicates += duplicates;
        let (sent, duplicates, took) =
            pipeline_pass(&publisher, &rounds, &format!("bench-{repeat}")).await?;
        result.pipeline.push(sent as f64 / took.as_secs_f64());
        result.duplicates += duplicates;
    }
    Ok(result)
}

// ------------------------------------------------------------------------------------------
// 4. RSS and CPU

const IDLE_PROCESSES: usize = 5;
const MANY_PROCESSES: usize = 1000;
const WINDOW_SECONDS: u64 = 20;
/// Pause between "everything announced" and the window.
const SETTLE: Duration = Duration::from_secs(2);
/// `process_compose.reconcile_interval`'s default.
const RECONCILE: Duration = Duration::from_secs(30);

struct Usage {
    /// From the spawn to every process announced in the stream.
    startup: Duration,
    /// VmRSS samples over the window, kB.
    rss_kb: Vec<u64>,
    /// VmHWM at the end of the window: the peak since the process started, kB.
    hwm_kb: u64,
    cpu_percent: f64,
}

async fn resources(processes: usize, mode: Mode) -> Result<Usage> {
    let nats = NatsServer::start();
    let project = sleepers(processes);
    let pc = ProcessCompose::start(&project).await;
    let spawned = Instant::now();
    let mut daemon = DaemonProcess::spawn(&pc.url(), &nats.url(), mode)?;
    daemon.wait_ready(Duration::from_secs(60)).await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    settle(&daemon, &js, processes, Duration::from_secs(120)).await?;
    let startup = spawned.elapsed();
    tokio::time::sleep(SETTLE).await;
    let usage = usage(&daemon).await?;
    drop(daemon);
    Ok(Usage { startup, ..usage })
}

/// A project of `processes` processes `p0000`, `p0001`, … that sleep.
fn sleepers(processes: usize) -> String {
    let mut project = String::from("processes:\n");
    for i in 0..processes {
        let _ = writeln!(project, "  p{i:04}:\n    command: \"sleep 100000\"");
    }
    project
}

/// Waits until every one of `processes` is tracked and announced (started + status_changed).
async fn settle(
    daemon: &DaemonProcess,
    js: &jetstream::Context,
    processes: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let tracked = daemon.metric("pc_eventd_processes").await.unwrap_or(0.0);
        let stored = match js.get_stream("PROCESS_EVENTS").await {
            Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        };
        if tracked as usize == processes && stored as usize >= 2 * processes {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the daemon did not settle: {tracked} processes tracked, {stored} events stored"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daemon's RSS and CPU over a window of [`WINDOW_SECONDS`] from now (`startup` is zero).
async fn usage(daemon: &DaemonProcess) -> Result<Usage> {
    let [watched] = watch([daemon.pid()], Duration::from_secs(WINDOW_SECONDS)).await?;
    Ok(Usage {
        startup: Duration::ZERO,
        rss_kb: watched.rss_kb,
        hwm_kb: watched.hwm_kb,
        cpu_percent: watched.cpu_percent,
    })
}

/// RSS and CPU of one process over a window.
struct Watched {
    /// VmRSS samples over the window (every 250 ms), kB.
    rss_kb: Vec<u64>,
    /// VmHWM at the end of the window: the peak since the process started, kB.
    hwm_kb: u64,
    /// utime + stime over the window, in percent of one core.
    cpu_percent: f64,
}

impl Watched {
    /// The median of the VmRSS samples, kB.
    fn steady_kb(&self) -> u64 {
        let samples: Vec<f64> = self.rss_kb.iter().map(|k| *k as f64).collect();
        median(&samples) as u64
    }
}

/// RSS and CPU of each of `pids` over the same `window` from now: VmRSS sampled every
/// 250 ms, VmHWM at the end, CPU from utime + stime in `/proc/PID/stat` at both ends.
async fn watch<const N: usize>(pids: [u32; N], window: Duration) -> Result<[Watched; N]> {
    let clock_ticks = clock_ticks_per_second();
    let window_start = Instant::now();
    let mut cpu_start = [0; N];
    for (ticks, pid) in cpu_start.iter_mut().zip(pids) {
        *ticks = cpu_ticks(pid)?;
    }
    let mut rss_kb: [Vec<u64>; N] = std::array::from_fn(|_| Vec::new());
    while window_start.elapsed() < window {
        for (samples, pid) in rss_kb.iter_mut().zip(pids) {
            samples.push(status_kb(pid, "VmRSS")?);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut cpu_end = [0; N];
    for (ticks, pid) in cpu_end.iter_mut().zip(pids) {
        *ticks = cpu_ticks(pid)?;
    }
    let wall = window_start.elapsed().as_secs_f64();
    let mut watched = Vec::with_capacity(N);
    for (i, (pid, rss_kb)) in pids.into_iter().zip(rss_kb).enumerate() {
        watched.push(Watched {
            rss_kb,
            hwm_kb: status_kb(pid, "VmHWM")?,
            cpu_percent: (cpu_end[i] - cpu_start[i]) as f64 / clock_ticks / wall * 100.0,
        });
    }
    Ok(watched
        .try_into()
        .unwrap_or_else(|_| unreachable!("one per pid")))
}

// ------------------------------------------------------------------------------------------
// 5. Scale

/// Tried in order; a point that fails ends the section (and is reported with its error).
const SCALE_POINTS: [usize; 2] = [2000, 5000];

struct Scale {
    /// process-compose's own start: `up` → every process Running.
    compose_startup: Duration,
    /// Daemon spawn → every process tracked and announced in the stream.
    announced: Duration,
    /// `kill -KILL` of one process → its `crashed` event at a NATS subscriber.
    crash_latency: Duration,
    usage: Usage,
}

async fn scale(processes: usize) -> Result<Scale> {
    let nats = NatsServer::start();
    let project = sleepers(processes);
    let up = Instant::now();
    let pc = ProcessCompose::start(&project).await;
    all_running(&pc, processes, Duration::from_secs(300)).await?;
    let compose_startup = up.elapsed();

    let spawned = Instant::now();
    let mut daemon = DaemonProcess::spawn(&pc.url(), &nats.url(), Mode::Stream)?;
    daemon.wait_ready(Duration::from_secs(120)).await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    settle(&daemon, &js, processes, Duration::from_secs(300)).await?;
    let announced = spawned.elapsed();
    tokio::time::sleep(SETTLE).await;
    let usage_window = usage(&daemon).await?;

    // One crash among them, from outside: a kill is a crash (no stop was requested).
    let victim = format!("p{:04}", processes / 2);
    let client = async_nats::connect(nats.url()).await?;
    let mut crashes = client
        .subscribe(format!("core.process.default.{victim}.crashed"))
        .await?;
    client.flush().await?;
    let (_, body) = pc.request("GET", &format!("/process/{victim}")).await?;
    let pid = serde_json::from_str::<ProcessState>(&body)?.pid;
    let killed = Instant::now();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    tokio::time::timeout(Duration::from_secs(30), crashes.next())
        .await
        .map_err(|_| format!("no crashed event for {victim} within 30 s"))?;
    let crash_latency = killed.elapsed();
    let hwm_kb = status_kb(daemon.pid(), "VmHWM")?;
    drop(daemon);
    Ok(Scale {
        compose_startup,
        announced,
        crash_latency,
        usage: Usage {
            startup: announced,
            hwm_kb,
            ..usage_window
        },
    })
}

/// Waits until process-compose reports all of its `processes` processes `Running`.
async fn all_running(pc: &ProcessCompose, processes: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, body) = pc.request("GET", "/processes").await?;
        let running = body.matches("\"status\":\"Running\"").count();
        if running == processes {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "process-compose runs {running} of {processes} after {}",
                humantime::format_duration(timeout)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ------------------------------------------------------------------------------------------
// 4b. Conditions: what sampling the usage costs, the daemon and process-compose

const CONDITIONS_PROCESSES: usize = 1000;
/// Long enough for several samples at the default `sample_interval` (10 s) and for two of the
/// reconcile polls (every 30 s) that read the same `GET /processes` without conditions.
const CONDITIONS_WINDOW: Duration = Duration::from_secs(60);

/// What reads process-compose's usage in one run of section 4b.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// process-compose alone: no daemon, nothing reads it.
    Alone,
    /// The daemon's defaults: no rules, no per-process gauges; in stream mode it reads
    /// `GET /processes` every `reconcile_interval` (30 s).
    Default,
    /// A pressure rule and a silence rule for every process and `health.process_metrics`, at
    /// this `conditions.sample_interval`.
    Rules(Duration),
}

impl Sampling {
    const ALL: [Sampling; 4] = [
        Sampling::Alone,
        Sampling::Default,
        Sampling::Rules(Duration::from_secs(10)),
        Sampling::Rules(Duration::from_secs(2)),
    ];

    fn label(self) -> String {
        match self {
            Sampling::Alone => "no daemon (process-compose alone)".into(),
            Sampling::Default => "A: no rules (reads every 30 s, `reconcile_interval`)".into(),
            Sampling::Rules(every) => format!(
                "{}: rules for every process, `sample_interval = \"{}\"`{}",
                if every == Duration::from_secs(10) {
                    "B"
                } else {
                    "C"
                },
                humantime::format_duration(every),
                if every == Duration::from_secs(10) {
                    " (the default)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// The settings of a run with rules: `health.process_metrics`, and in `[conditions]` a pressure
/// rule (memory and CPU) and a silence rule for every process, with thresholds that `sleep` never
/// crosses, so that the cost measured is that of sampling and judging, not of events.
fn conditions_config(sample_interval: Duration) -> String {
    format!(
        "health.process_metrics = true\n\n[conditions]\nsample_interval = \"{}\"\n\n\
         [[conditions.pressure]]\nprocesses = [\"*\"]\nmemory = \"1GiB\"\ncpu = 90.0\nfor = \"30s\"\n\n\
         [[conditions.silence]]\nprocesses = [\"*\"]\nafter = \"1h\"\n",
        humantime::format_duration(sample_interval)
    )
}

struct ConditionsRun {
    sampling: Sampling,
    /// The daemon's spawn → every process tracked and announced (its reads of
    /// `/process/info/{name}` for every process included).
    announced: Option<Duration>,
    daemon: Option<Watched>,
    compose: Watched,
    /// The daemon's successful reads of `GET /processes` in the window (`pc_eventd_polls_total`).
    reads: u64,
    /// Their mean duration as the daemon timed them
    /// (`pc_eventd_upstream_request_duration_seconds`), ms.
    read_ms: Option<f64>,
    /// Events stored in the stream during the window (none expected: no threshold is crossed).
    events: u64,
    /// Per-process memory series on `/metrics` at the end, and how many hold a reading > 0.
    memory_series: (usize, usize),
}

async fn conditions(sampling: Sampling) -> Result<ConditionsRun> {
    let processes = CONDITIONS_PROCESSES;
    let pc = ProcessCompose::start(&sleepers(processes)).await;
    // The window must not hold process-compose's own start of 1000 processes.
    all_running(&pc, processes, Duration::from_secs(120)).await?;
    let compose = compose_pid(&pc)?;
    let settings = match sampling {
        Sampling::Alone => {
            tokio::time::sleep(SETTLE).await;
            let [compose] = watch([compose], CONDITIONS_WINDOW).await?;
            return Ok(ConditionsRun {
                sampling,
                announced: None,
                daemon: None,
                compose,
                reads: 0,
                read_ms: None,
                events: 0,
                memory_series: (0, 0),
            });
        }
        Sampling::Default => String::new(),
        Sampling::Rules(every) => conditions_config(every),
    };
    let nats = NatsServer::start();
    let spawned = Instant::now();
    let mut daemon =
        DaemonProcess::spawn_with(&pc.url(), &nats.url(), Mode::Stream, "bench", &settings)?;
    daemon.wait_ready(Duration::from_secs(60)).await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    settle(&daemon, &js, processes, Duration::from_secs(120)).await?;
    let announced = spawned.elapsed();
    tokio::time::sleep(SETTLE).await;

    // The counters are read just outside the window, so that the reads cost it nothing.
    let stored = async || -> Result<u64> {
        Ok(js
            .get_stream("PROCESS_EVENTS")
            .await?
            .info()
            .await?
            .state
            .messages)
    };
    let before = daemon.metrics().await.ok_or("no /metrics")?;
    let events_before = stored().await?;
    let [daemon_usage, compose] = watch([daemon.pid(), compose], CONDITIONS_WINDOW).await?;
    let after = daemon.metrics().await.ok_or("no /metrics")?;
    let events = stored().await? - events_before;

    let delta = |name: &str| {
        metric_value(&after, name).unwrap_or(0.0) - metric_value(&before, name).unwrap_or(0.0)
    };
    let reads = delta("pc_eventd_polls_total") as u64;
    let timed = delta("pc_eventd_upstream_request_duration_seconds_count");
    let read_ms = (timed > 0.0)
        .then(|| delta("pc_eventd_upstream_request_duration_seconds_sum") / timed * 1000.0);
    let memory: Vec<f64> = after
        .lines()
        .filter(|l| l.starts_with("pc_eventd_process_memory_bytes{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    let memory_series = (memory.len(), memory.iter().filter(|v| **v > 0.0).count());
    drop(daemon);
    Ok(ConditionsRun {
        sampling,
        announced: Some(announced),
        daemon: Some(daemon_usage),
        compose,
        reads,
        read_ms,
        events,
        memory_series,
    })
}

// ------------------------------------------------------------------------------------------
// The report

#[derive(Default)]
struct Report {
    latency: Vec<(Mode, Latency)>,
    crash_loop: Vec<(Mode, CrashLoop)>,
    throughput: Option<Throughput>,
    resources: Vec<(usize, Mode, Usage)>,
    scale: Vec<(usize, std::result::Result<Scale, String>)>,
    conditions: Vec<ConditionsRun>,
}

impl Report {
    /// Section 4b: one row per run, then the ratios of the runs with rules to the run without.
    fn conditions_markdown(&self, out: &mut String) {
        let window = CONDITIONS_WINDOW.as_secs();
        let _ = writeln!(
            out,
            "### 4b. Conditions: what sampling the usage costs at {CONDITIONS_PROCESSES} processes (stream mode)\n\n\
             | daemon | `GET /processes` reads in the {window} s window | mean read ms | daemon spawn → all announced | daemon RSS steady (median) MiB | daemon RSS peak (VmHWM) MiB | daemon CPU % over {window} s | process-compose CPU % over {window} s | process-compose RSS steady (median) MiB |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "–".into());
        for run in &self.conditions {
            let daemon = run.daemon.as_ref();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.1} |",
                run.sampling.label(),
                if daemon.is_some() {
                    run.reads.to_string()
                } else {
                    "–".into()
                },
                or_dash(run.read_ms.map(|ms| format!("{ms:.0}"))),
                or_dash(run.announced.map(|d| format!("{:.1} s", d.as_secs_f64()))),
                or_dash(daemon.map(|d| format!("{:.1}", mib(d.steady_kb())))),
                or_dash(daemon.map(|d| format!("{:.1}", mib(d.hwm_kb)))),
                or_dash(daemon.map(|d| format!("{:.2}", d.cpu_percent))),
                run.compose.cpu_percent,
                mib(run.compose.steady_kb()),
            );
        }

        // Ratios of each run with rules to the run without, all from this one run of the bench.
        let baseline = self
            .conditions
            .iter()
            .find(|r| r.sampling == Sampling::Default);
        let with_rules: Vec<&ConditionsRun> = self
            .conditions
            .iter()
            .filter(|r| matches!(r.sampling, Sampling::Rules(_)))
            .collect();
        if let Some(a) = baseline
            && let Some(a_daemon) = &a.daemon
            && !with_rules.is_empty()
        {
            let ratio = |x: f64, y: f64| {
                if y > 0.0 {
                    format!("{:.2}", x / y)
                } else {
                    "– (A below one clock tick)".into()
                }
            };
            out.push_str(
                "\n| ratio (same run) | daemon CPU | daemon RSS steady | daemon RSS peak | process-compose CPU |\n\
                 |---|---|---|---|---|\n",
            );
            for run in &with_rules {
                let Some(d) = &run.daemon else { continue };
                let name = run.sampling.label();
                let name = name.split(':').next().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {name} / A | {} | {} | {} | {} |",
                    ratio(d.cpu_percent, a_daemon.cpu_percent),
                    ratio(d.steady_kb() as f64, a_daemon.steady_kb() as f64),
                    ratio(d.hwm_kb as f64, a_daemon.hwm_kb as f64),
                    ratio(run.compose.cpu_percent, a.compose.cpu_percent),
                );
            }
            // The cost of one read: the extra CPU time over the extra reads, against the run
            // with the most reads (the best signal over one clock tick).
            if let Some(most) = with_rules.iter().max_by_key(|r| r.reads)
                && let Some(d) = &most.daemon
                && most.reads > a.reads
            {
                let per_read = |x: f64, y: f64| {
                    (x - y) / 100.0 * CONDITIONS_WINDOW.as_secs_f64()
                        / (most.reads - a.reads) as f64
                        * 1000.0
                };
                let run = most.sampling.label();
                let run = run.split(':').next().unwrap_or_default();
                let compose_ms = per_read(most.compose.cpu_percent, a.compose.cpu_percent);
                let daemon_ms = per_read(d.cpu_percent, a_daemon.cpu_percent);
                // ms of CPU every 10 s, in percent of one core.
                let at_10s = |ms: f64| ms / 10_000.0 * 100.0;
                let _ = writeln!(
                    out,
                    "\nOne read of `GET /processes` with {CONDITIONS_PROCESSES} processes, from run {run} against A \
                     ((CPU time of {run} − CPU time of A) / ({} − {} reads)): **{compose_ms:.0} ms of \
                     process-compose's CPU**, {daemon_ms:.0} ms of the daemon's. So reading every S seconds \
                     costs process-compose about {compose_ms:.0} ms of CPU per S ({:.2} % of one core at the \
                     default 10 s) and the daemon about {daemon_ms:.0} ms per S ({:.2} %).",
                    most.reads,
                    a.reads,
                    at_10s(compose_ms),
                    at_10s(daemon_ms),
                );
            }
        }

        let events: u64 = self.conditions.iter().map(|r| r.events).sum();
        let series: Vec<String> = self
            .conditions
            .iter()
            .filter(|r| matches!(r.sampling, Sampling::Rules(_)))
            .map(|r| format!("{} of {}", r.memory_series.1, r.memory_series.0))
            .collect();
        let _ = writeln!(
            out,
            "\nEach run has its own process-compose of {CONDITIONS_PROCESSES} `sleep 100000` processes (and, \
             with a daemon, its own nats-server); the daemon is the release binary in stream mode, \
             spawned once process-compose runs them all, and the {window} s window starts 2 s after \
             every process is tracked and announced. Rules: `[[conditions.pressure]] processes = [\"*\"], \
             memory = \"1GiB\", cpu = 90.0, for = \"30s\"`, `[[conditions.silence]] processes = [\"*\"], \
             after = \"1h\"` and `health.process_metrics = true` (500 processes with series, the \
             default limit); thresholds no `sleep` crosses: {events} events were stored during the \
             windows, and the per-process memory series at the end held a reading above 0 in {} \
             (B, C). Reads and their mean duration from the daemon's `pc_eventd_polls_total` and \
             `pc_eventd_upstream_request_duration_seconds`, read just before and after the window. \
             RSS and CPU as in section 4, for the daemon and for process-compose (its pid: the one \
             child of the bench whose command line holds its temp project's path); 100 % = one core, \
             one clock tick over the window is {:.3} %. process-compose measures a process's memory \
             and CPU (gopsutil, `/proc`) when `GET /processes` asks for its state, at most once a \
             second per process.\n",
            series.join(", "),
            100.0 / clock_ticks_per_second() / window as f64
        );
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// 30 MB as the target says it: 30 × 10⁶ bytes (28.6 MiB).
const RSS_TARGET_BYTES: u64 = 30_000_000;

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

impl Report {
    fn markdown(&self) -> String {
        let mut out = String::new();
        let mut targets: Vec<(String, String, &'static str)> = Vec::new();

        if !self.latency.is_empty() {
            out.push_str(
                "### 1. Detection latency: process exit → `crashed` event at a NATS subscriber\n\n\
                 | mode | samples | p50 ms | p99 ms | max ms | notes |\n|---|---|---|---|---|---|\n",
            );
            for (mode, l) in &self.latency {
                let mut sorted = l.samples_ms.clone();
                sorted.sort_by(f64::total_cmp);
                let mut notes = Vec::new();
                if sorted.len() < l.expected {
                    notes.push(format!(
                        "{} crashes never arrived",
                        l.expected - sorted.len()
                    ));
                }
                if l.repeated > 0 {
                    notes.push(format!("{} repeated events", l.repeated));
                }
                if l.unmatched > 0 {
                    notes.push(format!("{} without an exit timestamp", l.unmatched));
                }
                notes.push(format!("{} of {} synthetic", l.synthetic, sorted.len()));
                let _ = writeln!(
                    out,
                    "| {} | {}/{} | {:.1} | {:.1} | {:.1} | {} |",
                    mode.label(),
                    sorted.len(),
                    l.expected,
                    percentile(&sorted, 50.0),
                    percentile(&sorted, 99.0),
                    sorted.last().copied().unwrap_or(f64::NAN),
                    notes.join("; ")
                );
                if *mode == Mode::Stream {
                    let p99 = percentile(&sorted, 99.0);
                    let complete = sorted.len() == l.expected;
                    targets.push((
                        "stream mode detection latency p99 < 50 ms".into(),
                        format!(
                            "{p99:.1} ms{}",
                            if complete {
                                ""
                            } else {
                                " (some crashes missing)"
                            }
                        ),
                        met(p99 < 50.0 && complete),
                    ));
                }
            }
            let _ = writeln!(
                out,
                "\n{LATENCY_PROCESSES} processes (restart `no`), each `sleep D; date +%s%N > FILE; exit 3` with \
                 D = {LATENCY_FIRST:.2} s + i × {LATENCY_STAGGER} s after its start, so one crash per process \
                 at every phase of the poll cycle. Latency = arrival time at a core NATS subscription on \
                 `core.process.*.*.crashed` − the timestamp in FILE (same clock). With {LATENCY_PROCESSES} \
                 samples the nearest-rank p99 is the maximum.\n"
            );
        }

        if !self.crash_loop.is_empty() {
            let expected_crashes = CRASH_LOOP_RESTARTS as usize + 1;
            let expected_restarts = CRASH_LOOP_RESTARTS as usize;
            out.push_str(
                "### 2. Crash loop: 21 runs, 20 policy restarts\n\n\
                 | mode | process-compose at the end | `crashed` seen / expected | `restarted` seen / expected | Σ `restarts_delta` | missed transitions |\n\
                 |---|---|---|---|---|---|\n",
            );
            for (mode, c) in &self.crash_loop {
                let missed = expected_crashes.saturating_sub(c.crashed)
                    + expected_restarts.saturating_sub(c.restarted);
                let extra =
                    (c.crashed + c.restarted).saturating_sub(expected_crashes + expected_restarts);
                let _ = writeln!(
                    out,
                    "| {} | {}, restarts {}, exit {} ({:.1} s) | {}/{expected_crashes} | {}/{expected_restarts} | {}/{expected_restarts} | {missed}{} |",
                    mode.label(),
                    c.actual.0,
                    c.actual.1,
                    c.actual.2,
                    c.duration.as_secs_f64(),
                    c.crashed,
                    c.restarted,
                    c.restarts_delta,
                    if extra > 0 {
                        format!(" ({extra} extra)")
                    } else {
                        String::new()
                    }
                );
                if *mode == Mode::Stream {
                    targets.push((
                        "0 missed transitions in stream mode (crash loop)".into(),
                        format!("{missed} missed"),
                        met(missed == 0 && extra == 0),
                    ));
                }
            }
            out.push_str(
                "\n`flaky: sleep 0.2; exit 3` with `restart: on_failure, max_restarts: 20, backoff_seconds: 1`, \
                 started once the daemon is ready. Events counted from the JetStream stream (an ordered \
                 consumer from its start) once process-compose reports `Completed`, the daemon has published the final \
                 crash and has stopped (draining its outbox). \
                 Missed = expected − seen for `crashed` plus `restarted`; a merged poll still accounts for \
                 every restart in `restarts_delta`.\n\n",
            );
        }

        if let Some(t) = &self.throughput {
            let pipeline = median(&t.pipeline);
            let raw = median(&t.raw);
            let ratio = pipeline / raw;
            let runs = |rates: &[f64]| {
                rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "### 3. Publish throughput\n\n\
                 | path | events/s (median of {n}) | runs |\n|---|---|---|\n\
                 | pc-eventd: `diff` + outbox write ∥ relay: `Publisher::publish_batch` (window {WINDOW}) + KV records + outbox ack | {pipeline:.0} | {} |\n\
                 | raw async-nats JetStream publish (window {WINDOW}) | {raw:.0} | {} |\n\
                 | **ratio** | **{ratio:.2}** | |\n\n\
                 {} events per run ({} observations of {THROUGHPUT_PROCESSES} processes: announce, then readiness \
                 flips, every third round a policy restart), mean payload {} bytes, unique `Nats-Msg-Id`s \
                 ({} acknowledged as duplicates), every ack awaited. One file-storage stream in the \
                 nats-server's temp store; the raw path publishes the same subjects and payloads, \
                 pre-serialized, on its own connection. Runs alternate raw / pipeline after a warm-up.\n",
                runs(&t.pipeline),
                runs(&t.raw),
                t.events,
                t.rounds,
                t.payload_bytes,
                t.duplicates,
                n = THROUGHPUT_REPEATS,
            );
            targets.push((
                "publish throughput ratio ≥ 0.5".into(),
                format!("{ratio:.2}"),
                met(ratio >= 0.5),
            ));
        }

        if !self.resources.is_empty() {
            let _ = writeln!(
                out,
                "### 4. Daemon RSS and CPU (release binary, separate process)\n\n\
                 | processes | mode | spawn → all announced | RSS steady (median) MiB | RSS peak (VmHWM) MiB | CPU % over {WINDOW_SECONDS} s |\n\
                 |---|---|---|---|---|---|"
            );
            for (processes, mode, u) in &self.resources {
                let mut sorted: Vec<f64> = u.rss_kb.iter().map(|k| *k as f64).collect();
                sorted.sort_by(f64::total_cmp);
                let steady = percentile(&sorted, 50.0) as u64;
                let _ = writeln!(
                    out,
                    "| {processes} | {} | {:.1} s | {:.1} | {:.1} | {:.2} |",
                    mode.label(),
                    u.startup.as_secs_f64(),
                    mib(steady),
                    mib(u.hwm_kb),
                    u.cpu_percent
                );
                if *processes == MANY_PROCESSES {
                    targets.push((
                        format!("RSS < 30 MB at {processes} processes ({})", mode.label()),
                        format!(
                            "peak {:.1} MB, steady {:.1} MB",
                            (u.hwm_kb * 1024) as f64 / 1e6,
                            (steady * 1024) as f64 / 1e6
                        ),
                        met(u.hwm_kb * 1024 < RSS_TARGET_BYTES),
                    ));
                }
            }
            let _ = writeln!(
                out,
                "\nEach process is `sleep 100000`. The default configuration but for the mode \
                 (health endpoint on, log level info, reconcile every 30 s in stream mode). The window \
                 starts 2 s after every process is tracked (`pc_eventd_processes`) and announced \
                 (2 events each in the stream); VmRSS sampled every 250 ms, VmHWM read at its end \
                 (the peak since the daemon started, startup included), CPU from utime + stime in \
                 `/proc/PID/stat` over the window (100 % = one core; one clock tick over the window \
                 is {:.2} %, so 0.00 means less than that). MiB = 2²⁰ bytes.",
                100.0 / clock_ticks_per_second() / WINDOW_SECONDS as f64
            );
            // The first reconcile poll comes `reconcile_interval` (30 s) after the stream connects.
            let quiet_stream = self
                .resources
                .iter()
                .filter(|(_, mode, _)| *mode == Mode::Stream)
                .all(|(_, _, u)| {
                    u.startup + SETTLE + Duration::from_secs(WINDOW_SECONDS) < RECONCILE
                });
            if quiet_stream {
                out.push_str(
                    "In stream mode every window closed before the first reconcile poll (30 s after \
                     connecting): the stream-mode figures are the daemon idling on its WebSocket \
                     subscriptions.\n",
                );
            }
            out.push('\n');
        }

        if !self.conditions.is_empty() {
            self.conditions_markdown(&mut out);
        }

        if !self.scale.is_empty() {
            let _ = writeln!(
                out,
                "### 5. Scale: stream mode (split subscriptions), release binary\n\n\
                 | processes | process-compose: `up` → all Running | daemon spawn → all announced | one crash (`kill -9`) → `crashed` at a subscriber | RSS steady (median) MiB | RSS peak (VmHWM) MiB | CPU % over {WINDOW_SECONDS} s |\n\
                 |---|---|---|---|---|---|---|"
            );
            for (processes, result) in &self.scale {
                match result {
                    Ok(s) => {
                        let mut sorted: Vec<f64> =
                            s.usage.rss_kb.iter().map(|k| *k as f64).collect();
                        sorted.sort_by(f64::total_cmp);
                        let _ = writeln!(
                            out,
                            "| {processes} | {:.1} s | {:.1} s | {:.1} ms | {:.1} | {:.1} | {:.2} |",
                            s.compose_startup.as_secs_f64(),
                            s.announced.as_secs_f64(),
                            s.crash_latency.as_secs_f64() * 1000.0,
                            mib(percentile(&sorted, 50.0) as u64),
                            mib(s.usage.hwm_kb),
                            s.usage.cpu_percent
                        );
                    }
                    Err(err) => {
                        let _ = writeln!(out, "| {processes} | failed: {err} | | | | | |");
                    }
                }
            }
            let _ = writeln!(
                out,
                "\nEach process is `sleep 100000` under process-compose v1.122.0. The daemon starts once \
                 process-compose runs them all, subscribes to the state stream in groups of 200 names \
                 (the server closes a subscriber whose 256-frame buffer overflows), and is timed until \
                 every process is tracked and announced (2 events each in the stream). The RSS and CPU \
                 window ({WINDOW_SECONDS} s) starts 2 s later; then one process in the middle is killed \
                 with SIGKILL and its `crashed` event awaited on a core NATS subscription. VmHWM is read \
                 after the crash.\n"
            );
        }

        if !targets.is_empty() {
            out.push_str("### Targets\n\n| target | measured | |\n|---|---|---|\n");
            for (target, measured, verdict) in targets {
                let _ = writeln!(out, "| {target} | {measured} | {verdict} |");
            }
            out.push_str(
                "\nThe RSS target is judged on the peak (VmHWM), against 30 × 10⁶ bytes.\n",
            );
        }
        out
    }
}
