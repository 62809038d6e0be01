//! A fleet on one machine, growing until something saturates: a hub of three clustered
//! nats-server nodes holding the R3 stream, and N hosts, each a leaf node of the hub, a real
//! process-compose running crash loops and the release binary `pc-eventd run` (stream mode,
//! `by_source` subjects, its host's name as `source`) publishing through its leaf node. For N =
//! 1, 2, 4, 8 and on while doubling N still raises the rate: events stored in the hub's stream
//! per second, the CPU of each role (process-compose with its crash loops' runs, the daemons,
//! the leaf nodes, the hub nodes) and of the whole machine, and where events waited: runs
//! process-compose made that the stream has no event of yet (the daemons falling behind it), or
//! messages in the daemons' outboxes (the bus falling behind the daemons). The first size at
//! which the rate stopped growing runs once more with `crash_output.enabled = false`, without
//! the daemon's one request to process-compose per crash.
//!
//! Run it through `scripts/bench.sh` (all benchmarks, docs/benchmarks.md rewritten) or
//! `scripts/bench.sh fleet` (this one, printed). A measurement, not a test: nothing here asserts
//! on a rate. The nodes are started from the packaged `packaging/nats/hub.conf` and `leaf.conf`
//! by the integration tests' support (`tests/it/support/fleet.rs`).

// The shared test support is compiled here in whole, but this bench uses only part of it.
#![allow(dead_code)]

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use pc_eventd_events::event::{EventType, LifecycleEvent};
use pc_eventd_events::process_compose::model::ProcessStatus;

use common::{
    DaemonProcess, Mode, Result, children_with_arg, clock_ticks_per_second, compose_pid,
    cpu_ticks_with_children, machine_busy_ticks, metric_value,
};
use support::compose::ProcessCompose;
use support::fleet::{Hub, LeafNode};

/// Crash loops on each host. Each exits at once and process-compose starts it again after its
/// backoff, at least 1 s (it reads a `backoff_seconds` below 1 as 1), so a host makes about
/// this many runs a second: enough that a few hosts load the machine.
const CRASH_LOOPS_PER_HOST: usize = 100;

/// The fleet sizes, tried in order.
const FLEET_SIZES: [usize; 6] = [1, 2, 4, 8, 16, 32];
/// Measured whatever the rates: the curve up to 8 hosts.
const ALWAYS_MEASURED: usize = 4;
/// Past those, a doubling of the hosts that raised the rate by less than this ends the run:
/// the machine has saturated.
const STILL_GROWING: f64 = 1.25;

/// From the daemons' readiness to the window: each announces its processes and settles into
/// the loops' rhythm.
const WARM_UP: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(20);
/// How long the daemons of a large fleet may take to be ready on a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// The roles the CPU is summed by, in the table's order.
const ROLES: [&str; 4] = [
    "process-compose with its runs",
    "daemons",
    "leaf nodes",
    "hub nodes (3)",
];

fn main() -> ExitCode {
    common::main_of("fleet", run())
}

async fn run() -> Result<String> {
    let started = Instant::now();
    let mut points: Vec<Point> = Vec::new();
    for hosts in FLEET_SIZES {
        if points.len() >= ALWAYS_MEASURED && last_growth(&points) < Some(STILL_GROWING) {
            break;
        }
        eprintln!(
            "bench: fleet of {hosts} hosts, {} crash loops",
            hosts * CRASH_LOOPS_PER_HOST
        );
        points.push(fleet(hosts, CrashOutput::Read).await?);
    }
    // The saturated size again without the one request of the daemon's to process-compose per
    // crash: whether the daemons wait on it.
    let control = match saturated(&points) {
        Some((_, at)) => {
            eprintln!(
                "bench: fleet of {} hosts, crash_output.enabled = false",
                at.hosts
            );
            Some(fleet(at.hosts, CrashOutput::Off).await?)
        }
        None => None,
    };
    eprintln!("bench: fleet done in {:.0?}", started.elapsed());
    Ok(markdown(&points, control.as_ref()))
}

/// Whether the daemons read a crashed process's last output from process-compose for its
/// `crashed` event (`crash_output.enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashOutput {
    /// The default: one request to process-compose per crash, awaited (at most
    /// `crash_output.read_timeout`) before the event is queued.
    Read,
    Off,
}

/// The last point's rate over the one before it, if there are two.
fn last_growth(points: &[Point]) -> Option<f64> {
    match points {
        [.., before, last] => Some(last.events_per_second() / before.events_per_second()),
        _ => None,
    }
}

/// The first doubling that raised the rate by less than [`STILL_GROWING`]: the sizes before and
/// after it.
fn saturated(points: &[Point]) -> Option<(&Point, &Point)> {
    points
        .windows(2)
        .find(|w| w[1].events_per_second() / w[0].events_per_second() < STILL_GROWING)
        .map(|w| (&w[0], &w[1]))
}

/// The crash loops of one host.
fn crash_loops() -> String {
    let mut project = String::from("processes:\n");
    for i in 0..CRASH_LOOPS_PER_HOST {
        let _ = writeln!(
            project,
            "  loop{i:03}:\n    command: \"exit 1\"\n    \
             availability: {{ restart: on_failure, backoff_seconds: 1 }}"
        );
    }
    project
}

/// One simulated host. The daemon is declared first so that it stops first, before its
/// process-compose and its leaf node.
struct Host {
    /// `host-N`: its daemon's `process_compose.source` and its leaf node's name.
    source: String,
    daemon: DaemonProcess,
    pc: ProcessCompose,
    /// Held for its lifetime: dropping it stops the leaf node.
    leaf: LeafNode,
}

impl Host {
    async fn start(
        hub: &Hub,
        index: usize,
        project: &str,
        crash_output: CrashOutput,
    ) -> Result<Self> {
        let source = format!("host-{index}");
        let leaf = LeafNode::start(hub, &source).await;
        let pc = ProcessCompose::start(project).await;
        // As an operator configures a host of the fleet (docs/deployment.md).
        let mut settings =
            String::from("nats.subject_layout = \"by_source\"\nnats.stream.replicas = 3\n");
        if crash_output == CrashOutput::Off {
            settings.push_str("crash_output.enabled = false\n");
        }
        let daemon =
            DaemonProcess::spawn_with(&pc.url(), &leaf.url(), Mode::Stream, &source, &settings)?;
        Ok(Self {
            source,
            daemon,
            pc,
            leaf,
        })
    }

    /// process-compose's restarts of each process so far: the runs that ended in a crash.
    async fn restarts(&self) -> Result<Vec<(String, u64)>> {
        let (status, body) = self.pc.request("GET", "/processes").await?;
        if status != 200 {
            return Err(format!("GET /processes: {status} {body}").into());
        }
        let states: serde_json::Value = serde_json::from_str(&body)?;
        Ok(states["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s["restarts"].as_u64()?)))
            .collect())
    }
}

/// What the stream holds of the fleet's crash loops, against process-compose, at one moment.
#[derive(Default)]
struct Lag {
    /// The runs process-compose has made that the stream holds no event of yet, summed over the
    /// fleet. They are on their way: frames in the state stream or the daemon's queue, being
    /// diffed, or in the outbox.
    runs: u64,
    /// Processes with a `crashed` event in the stream, and how many of those newest `crashed`
    /// events went out without the process's output: its read from process-compose failed or
    /// did not finish within `crash_output.read_timeout`, or is turned off.
    crashed: u64,
    crashed_without_output: u64,
}

/// One process's newest events in the stream, by stream sequence.
#[derive(Default)]
struct Newest {
    /// Of any type: (sequence, the runs it shows process-compose had made).
    event: (u64, u64),
    /// Of type `crashed`: (sequence, whether it has the process's output).
    crashed: Option<(u64, bool)>,
}

impl Lag {
    async fn now(hosts: &[Host], js: &jetstream::Context) -> Result<Self> {
        let mut stream = js.get_stream("PROCESS_EVENTS").await?;
        // The newest event of every subject (a process's event type) when it is created, then
        // whatever comes after; read up to the last sequence from just after it was created.
        let newest_of_each_subject = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                filter_subject: "core.process.>".into(),
                ..Default::default()
            })
            .await?;
        let last = stream.info().await?.state.last_sequence;
        let mut messages = newest_of_each_subject.messages().await?;
        let mut newest: HashMap<(String, String), Newest> = HashMap::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await?
                .ok_or("the stream's reader ended")??;
            let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
            let event: LifecycleEvent = serde_json::from_slice(&message.payload)?;
            // process-compose counts a restart just after announcing `Restarting`: the run that
            // event ends is already in its count.
            let runs = u64::from(event.state.restarts)
                + u64::from(event.state.status == ProcessStatus::Restarting.as_str());
            let process = newest.entry((event.source, event.process)).or_default();
            if sequence > process.event.0 {
                process.event = (sequence, runs);
            }
            if event.event_type == EventType::Crashed
                && process.crashed.is_none_or(|(seen, _)| sequence > seen)
            {
                let has_output = event.output.is_some_and(|o| o.unavailable.is_none());
                process.crashed = Some((sequence, has_output));
            }
            if sequence >= last {
                break;
            }
        }
        let mut lag = Self::default();
        for host in hosts {
            for (name, restarts) in host.restarts().await? {
                let stored = newest.get(&(host.source.clone(), name));
                let runs_stored = stored.map_or(0, |n| n.event.1);
                lag.runs += restarts.saturating_sub(runs_stored);
                if let Some((_, has_output)) = stored.and_then(|n| n.crashed) {
                    lag.crashed += 1;
                    lag.crashed_without_output += u64::from(!has_output);
                }
            }
        }
        Ok(lag)
    }
}

/// The pids of the fleet's processes, by role ([`ROLES`]).
struct Roles([Vec<u32>; 4]);

impl Roles {
    fn of(hosts: &[Host]) -> Result<Self> {
        let nats_config = |name: &str| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging/nats")
                .join(name)
        };
        let compose = hosts
            .iter()
            .map(|h| compose_pid(&h.pc))
            .collect::<Result<Vec<_>>>()?;
        let daemons = hosts.iter().map(|h| h.daemon.pid()).collect();
        let leaf_nodes = children_with_arg(&nats_config("leaf.conf"))?;
        let hub_nodes = children_with_arg(&nats_config("hub.conf"))?;
        if leaf_nodes.len() != hosts.len() || hub_nodes.len() != 3 {
            return Err(format!(
                "expected {} leaf nodes and 3 hub nodes among our children, found {leaf_nodes:?} \
                 and {hub_nodes:?}",
                hosts.len()
            )
            .into());
        }
        Ok(Self([compose, daemons, leaf_nodes, hub_nodes]))
    }

    /// Each role's CPU time so far, in clock ticks, with that of the children its processes
    /// waited for (process-compose's runs).
    fn ticks(&self) -> Result<[u64; 4]> {
        let mut ticks = [0; 4];
        for (sum, pids) in ticks.iter_mut().zip(&self.0) {
            for pid in pids {
                *sum += cpu_ticks_with_children(*pid)?;
            }
        }
        Ok(ticks)
    }
}

/// The counters at one end of the window.
struct Sample {
    at: Instant,
    role_ticks: [u64; 4],
    machine_ticks: u64,
    /// The stream's last sequence: every event stored so far (a duplicate takes none).
    last_sequence: u64,
    /// process-compose's restarts, summed over the hosts.
    restarts: u64,
    /// Messages waiting in the daemons' outboxes, summed.
    outbox: u64,
}

impl Sample {
    async fn take(roles: &Roles, hosts: &[Host], js: &jetstream::Context) -> Result<Self> {
        // CPU first and together: the window's length is taken between these readings.
        let at = Instant::now();
        let role_ticks = roles.ticks()?;
        let machine_ticks = machine_busy_ticks()?;
        let last_sequence = js
            .get_stream("PROCESS_EVENTS")
            .await?
            .info()
            .await?
            .state
            .last_sequence;
        let mut restarts = 0;
        let mut outbox = 0.0;
        for host in hosts {
            restarts += host.restarts().await?.iter().map(|(_, n)| n).sum::<u64>();
            let metrics = host.daemon.metrics().await.ok_or("no /metrics")?;
            outbox += metric_value(&metrics, "pc_eventd_outbox_messages").unwrap_or(0.0);
        }
        Ok(Self {
            at,
            role_ticks,
            machine_ticks,
            last_sequence,
            restarts,
            outbox: outbox as u64,
        })
    }
}

/// One fleet, measured over [`WINDOW`].
struct Point {
    hosts: usize,
    crash_output: CrashOutput,
    seconds: f64,
    stored: u64,
    restarts: u64,
    /// The daemons' outboxes at the window's start and end, messages.
    outbox: (u64, u64),
    /// Just before the window and just after it.
    lag: (Lag, Lag),
    /// CPU time of each role over the window, clock ticks.
    role_ticks: [u64; 4],
    machine_ticks: u64,
}

impl Point {
    /// The table's first cell: the hosts, and the setting when it is not the default.
    fn label(&self) -> String {
        match self.crash_output {
            CrashOutput::Read => self.hosts.to_string(),
            CrashOutput::Off => format!("{}, `crash_output.enabled = false`", self.hosts),
        }
    }

    fn events_per_run(&self) -> f64 {
        self.stored as f64 / self.restarts.max(1) as f64
    }

    fn runs_per_second(&self) -> f64 {
        self.restarts as f64 / self.seconds
    }

    fn events_per_second(&self) -> f64 {
        self.stored as f64 / self.seconds
    }

    /// `ticks` of CPU time over the window, in percent of one core.
    fn percent(&self, ticks: u64) -> f64 {
        ticks as f64 / clock_ticks_per_second() / self.seconds * 100.0
    }

    /// `ticks` of CPU time per event stored, µs.
    fn per_event_us(&self, ticks: u64) -> f64 {
        ticks as f64 / clock_ticks_per_second() / self.stored.max(1) as f64 * 1e6
    }

    /// The machine's busy time that no role accounts for: the bench itself, the kernel's work
    /// charged to no process, anything else running on the machine.
    fn rest_ticks(&self) -> u64 {
        self.machine_ticks
            .saturating_sub(self.role_ticks.iter().sum::<u64>())
    }
}

/// Starts a fleet of `hosts`, lets it run, and measures it.
async fn fleet(hosts: usize, crash_output: CrashOutput) -> Result<Point> {
    let hub = Hub::start().await;
    let project = crash_loops();
    let mut fleet = Vec::with_capacity(hosts);
    for index in 0..hosts {
        fleet.push(Host::start(&hub, index, &project, crash_output).await?);
    }
    for host in &mut fleet {
        host.daemon.wait_ready(READY_WITHIN).await?;
    }
    tokio::time::sleep(WARM_UP).await;
    let js = support::jetstream_at(&hub.url(0)).await;
    let replicas = js
        .get_stream("PROCESS_EVENTS")
        .await?
        .info()
        .await?
        .config
        .num_replicas;
    if replicas != 3 {
        return Err(format!("the daemons made a stream of {replicas} replicas, not 3").into());
    }
    let roles = Roles::of(&fleet)?;
    // Outside the window: reading the stream costs the hub and the bench.
    let lag_before = Lag::now(&fleet, &js).await?;
    let start = Sample::take(&roles, &fleet, &js).await?;
    tokio::time::sleep(WINDOW).await;
    let end = Sample::take(&roles, &fleet, &js).await?;
    let lag_after = Lag::now(&fleet, &js).await?;
    Ok(Point {
        hosts,
        crash_output,
        seconds: end.at.duration_since(start.at).as_secs_f64(),
        stored: end.last_sequence - start.last_sequence,
        restarts: end.restarts - start.restarts,
        outbox: (start.outbox, end.outbox),
        lag: (lag_before, lag_after),
        role_ticks: std::array::from_fn(|i| end.role_ticks[i] - start.role_ticks[i]),
        machine_ticks: end.machine_ticks - start.machine_ticks,
    })
}

fn markdown(points: &[Point], control: Option<&Point>) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let _ = writeln!(
        out,
        "### 7. Fleet: events stored in the hub's R3 stream as hosts are added\n\n\
         | hosts | crash loops | runs/s | events/s stored | per daemon | × previous | runs not in the stream, before → after | outboxes, start → end | CPU % {} | CPU % {} | CPU % {} | CPU % {} | machine busy % (of {}) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ROLES[0],
        ROLES[1],
        ROLES[2],
        ROLES[3],
        cores * 100
    );
    let rows = points.iter().enumerate().map(|(i, p)| {
        let before = i.checked_sub(1).map(|before| &points[before]);
        (p, before)
    });
    for (p, before) in rows.chain(control.map(|c| (c, None))) {
        let growth = before.map_or_else(
            || "–".into(),
            |b| format!("×{:.2}", p.events_per_second() / b.events_per_second()),
        );
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {growth} | {} → {} | {} → {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.label(),
            p.hosts * CRASH_LOOPS_PER_HOST,
            p.runs_per_second(),
            p.events_per_second(),
            p.events_per_second() / p.hosts as f64,
            p.lag.0.runs,
            p.lag.1.runs,
            p.outbox.0,
            p.outbox.1,
            p.percent(p.role_ticks[0]),
            p.percent(p.role_ticks[1]),
            p.percent(p.role_ticks[2]),
            p.percent(p.role_ticks[3]),
            p.percent(p.machine_ticks),
        );
    }

    let _ = writeln!(
        out,
        "\n| hosts | events per run | newest `crashed` events without output | CPU µs per stored event: {} | {} | {} | {} | the rest of the machine |\n\
         |---|---|---|---|---|---|---|---|",
        ROLES[0], ROLES[1], ROLES[2], ROLES[3]
    );
    for p in points.iter().chain(control) {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} of {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.label(),
            p.events_per_run(),
            p.lag.1.crashed_without_output,
            p.lag.1.crashed,
            p.per_event_us(p.role_ticks[0]),
            p.per_event_us(p.role_ticks[1]),
            p.per_event_us(p.role_ticks[2]),
            p.per_event_us(p.role_ticks[3]),
            p.per_event_us(p.rest_ticks()),
        );
    }

    out.push('\n');
    out.push_str(&verdict(points, control, cores));
    let _ = writeln!(
        out,
        "\n\nEach host: a leaf node (`packaging/nats/leaf.conf`), a process-compose of \
         {CRASH_LOOPS_PER_HOST} processes `exit 1` with `restart: on_failure, backoff_seconds: 1` \
         (its minimum: each runs about once a second), and the release binary in stream mode with \
         `nats.subject_layout = \"by_source\"`, `process_compose.source = \"host-N\"` and \
         `nats.stream.replicas = 3`, connected to its leaf node; the hub is three nodes of \
         `packaging/nats/hub.conf`. Each row is a new fleet; its {} s window starts {} s after \
         every daemon is ready. Events stored: the stream's last sequence on a hub node, at both ends \
         of the window. Runs/s: process-compose's restarts (`GET /processes`), summed over the \
         hosts; a run makes 4 events (`status_changed` to Restarting, `crashed`, `status_changed` \
         to Running, `restarted`). Runs not in the stream: per process, process-compose's restarts \
         less those its newest event in the stream shows, summed, counted just before and just \
         after the window: runs on their way from process-compose to the stream (the outbox \
         included). Outboxes: the daemons' `pc_eventd_outbox_messages`, summed. Newest `crashed` \
         events without output: after the window, of each process's newest `crashed` event in the \
         stream, those without the process's output (its read failed or took longer than \
         `crash_output.read_timeout`, 500 ms, or is turned off). CPU: utime + stime of each process with its waited-for children's (cutime + \
         cstime: process-compose's runs of its crash loops), summed per role, in percent of one \
         core; the machine's from `/proc/stat` (all CPUs, everything but idle and iowait); the rest \
         is the bench itself, kernel work charged to no process and anything else on the machine. \
         Sizes double from 1 while the rate grows: past {} hosts, a doubling that raised the rate \
         by less than ×{STILL_GROWING} is the last, and that size is run once more with \
         `crash_output.enabled = false`.",
        WINDOW.as_secs(),
        WARM_UP.as_secs(),
        FLEET_SIZES[ALWAYS_MEASURED - 1],
    );
    out
}

/// What saturated, from the run's own figures: where doubling the hosts stopped paying, how
/// busy the machine was there and with what, where the events waited (before the daemons had
/// them in their outboxes, or in the outboxes: the bus falling behind), and the same fleet
/// without the daemons' reads of crash output.
fn verdict(points: &[Point], control: Option<&Point>, cores: usize) -> String {
    let Some(best) = points
        .iter()
        .max_by(|a, b| a.events_per_second().total_cmp(&b.events_per_second()))
    else {
        return String::new();
    };
    let mut text = String::new();
    let at = match saturated(points) {
        Some((before, after)) => {
            let _ = write!(
                text,
                "Doubling the fleet from {} to {} hosts raised the stored rate only ×{:.2} \
                 ({:.0} → {:.0} events/s); the most stored was {:.0} events/s with {} hosts. ",
                before.hosts,
                after.hosts,
                after.events_per_second() / before.events_per_second(),
                before.events_per_second(),
                after.events_per_second(),
                best.events_per_second(),
                best.hosts,
            );
            after
        }
        None => {
            let _ = write!(
                text,
                "The stored rate still grew at every doubling, up to {:.0} events/s with {} hosts. ",
                best.events_per_second(),
                best.hosts
            );
            points.last().unwrap_or(best)
        }
    };
    let busy = at.machine_ticks.max(1) as f64;
    let share = |ticks: u64| ticks as f64 / busy * 100.0;
    let _ = write!(
        text,
        "At {} hosts the machine was busy {:.0} % of {} % ({cores} cores): {} {:.0} % of that, \
         {} {:.0} %, {} {:.0} %, {} {:.0} %, the rest {:.0} %. {}",
        at.hosts,
        at.percent(at.machine_ticks),
        cores * 100,
        ROLES[0],
        share(at.role_ticks[0]),
        ROLES[1],
        share(at.role_ticks[1]),
        ROLES[2],
        share(at.role_ticks[2]),
        ROLES[3],
        share(at.role_ticks[3]),
        share(at.rest_ticks()),
        where_events_waited(at),
    );
    if let Some(control) = control {
        let _ = write!(
            text,
            "\n\nWith `crash_output.enabled = false` (no read of a crashed process's output from \
             process-compose before its event is queued) the same {} hosts stored {:.0} events/s, \
             ×{:.2} of the default's, {:.2} events per run. {}",
            control.hosts,
            control.events_per_second(),
            control.events_per_second() / at.events_per_second(),
            control.events_per_run(),
            where_events_waited(control),
        );
        if grew((at.lag.0.runs, at.lag.1.runs), at.restarts)
            && !grew(at.outbox, at.stored)
            && !grew((control.lag.0.runs, control.lag.1.runs), control.restarts)
        {
            text.push_str(
                " So at the saturated size the daemons waited on process-compose's answers to those \
                 reads (one per crash, awaited before the next frame), not on CPU of their own or \
                 on the bus.",
            );
        }
    }
    text
}

/// Where a point's events waited: on their way to the daemons' outboxes, or in them.
fn where_events_waited(p: &Point) -> String {
    let mut text = String::new();
    let runs = (p.lag.0.runs, p.lag.1.runs);
    let runs_seconds = runs.1 as f64 / p.runs_per_second();
    if grew(runs, p.restarts) {
        let _ = write!(
            text,
            "The daemons fell behind process-compose: the runs it had made that the stream held no \
             event of went from {} to {} over the window ({runs_seconds:.1} s of its runs), while \
             the daemons used {:.0} % of a core together ({:.1} % each). ",
            runs.0,
            runs.1,
            p.percent(p.role_ticks[1]),
            p.percent(p.role_ticks[1]) / p.hosts as f64,
        );
    } else {
        let _ = write!(
            text,
            "The daemons kept pace with process-compose: {} runs were not in the stream before the \
             window and {} after it ({runs_seconds:.1} s of its runs), not growing. ",
            runs.0, runs.1
        );
    }
    let (before, after) = p.outbox;
    let outbox_seconds = after as f64 / p.events_per_second();
    if grew(p.outbox, p.stored) {
        let _ = write!(
            text,
            "Their outboxes grew from {before} to {after} messages ({outbox_seconds:.1} s of the \
             stored rate): the bus fell behind them."
        );
    } else {
        let _ = write!(
            text,
            "Their outboxes held {before} messages at the window's start and {after} at its end \
             ({outbox_seconds:.1} s of the stored rate), not growing: the bus kept pace with what \
             they had diffed."
        );
    }
    text
}

/// Whether a backlog (before, after the window) grew by more than a twentieth of what the
/// window `made`: runs, or events stored.
fn grew((before, after): (u64, u64), made: u64) -> bool {
    after > before + made / 20
}
