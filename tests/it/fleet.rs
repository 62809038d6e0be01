//! A fleet on one machine: a 3-node hub cluster holding the R3 stream, and simulated hosts, each
//! a leaf node of the hub with its own real process-compose running crash loops and its own
//! `pc-eventd run` publishing through the leaf node in the by-source layout. Then, in turn: a
//! hub node is killed, one host's leaf node is down for 60 s, and one daemon is killed with
//! SIGKILL and started again. Afterwards the stream holds every event of every host once, in
//! each source's order, and each host's last events agree with its process-compose.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use pc_eventd_events::event::EventType::*;
use pc_eventd_events::event::LifecycleEvent;

use crate::support::binary::Binary;
use crate::support::compose::ProcessCompose;
use crate::support::events::{EventLog, Received, Reliability};
use crate::support::fleet::{Hub, LeafNode};

/// Hosts: at least four, and what two cores carry beside the hub (each host is a leaf node, a
/// process-compose with two crash loops and a daemon).
const HOSTS: usize = 4;

/// How long one host's leaf node stays down.
const LEAF_OUTAGE: Duration = Duration::from_secs(60);

/// How long the fleet may take to show something on a loaded machine: a hub election, a
/// daemon's reconnection, an outbox drained.
const PATIENCE: Duration = Duration::from_secs(60);

/// Two crash loops, restarted for ever by process-compose, each run a fraction of a second.
const PROJECT: &str = r#"
processes:
  worker:
    command: "sleep 0.4; exit 1"
    availability: { restart: on_failure, backoff_seconds: 1 }
  batch:
    command: "sleep 0.7; exit 2"
    availability: { restart: on_failure, backoff_seconds: 1 }
"#;

const PROCESSES: [&str; 2] = ["worker", "batch"];

/// One simulated host.
struct Host {
    source: String,
    leaf: LeafNode,
    pc: ProcessCompose,
    daemon: Binary,
    /// The daemon's configuration file, used again when it restarts.
    config: PathBuf,
    /// Its state directory (outbox and lock), kept across a restart.
    state_dir: PathBuf,
}

impl Host {
    async fn start(index: usize, hub: &Hub) -> Self {
        let source = format!("host-{index}");
        let leaf = LeafNode::start(hub, &source).await;
        let pc = ProcessCompose::start(PROJECT).await;
        let state_dir = crate::support::state_dir();
        let config = state_dir.join("pc-eventd.toml");
        std::fs::write(&config, daemon_config(&source, &pc, &leaf)).unwrap();
        let daemon = spawn_daemon(&config, &state_dir);
        Self {
            source,
            leaf,
            pc,
            daemon,
            config,
            state_dir,
        }
    }

    /// `kill -9` of its daemon.
    async fn kill_daemon(&mut self) {
        self.daemon.signal("KILL");
        self.daemon.exited().await;
    }

    /// The same daemon again, on the same configuration and state.
    fn restart_daemon(&mut self) {
        self.daemon = spawn_daemon(&self.config, &self.state_dir);
    }

    /// Stops its crash loops and returns what process-compose says of each at rest:
    /// (process, status, restarts).
    async fn stop_processes(&self) -> Vec<(String, String, u32)> {
        for name in PROCESSES {
            self.pc.stop_process(name).await;
            self.pc.wait_for_status(name, "Completed", PATIENCE).await;
        }
        let (status, body) = self.pc.request("GET", "/processes").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let states: serde_json::Value = serde_json::from_str(&body).unwrap();
        states["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                    u32::try_from(s["restarts"].as_u64().unwrap()).unwrap(),
                )
            })
            .collect()
    }
}

/// The daemon's file, as an operator would write it on a host of the fleet.
fn daemon_config(source: &str, pc: &ProcessCompose, leaf: &LeafNode) -> String {
    format!(
        r#"[process_compose]
url = "{pc}"
source = "{source}"
poll_interval = "200ms"
max_backoff = "1s"

[nats]
url = "{leaf}"
subject_layout = "by_source"
ack_timeout = "2s"

[nats.stream]
replicas = 3
"#,
        pc = pc.url(),
        leaf = leaf.url(),
    )
}

fn spawn_daemon(config: &std::path::Path, state_dir: &std::path::Path) -> Binary {
    Binary::spawn_with_env(
        &["run", "--config", config.to_str().unwrap()],
        &[("PC_EVENTD_DAEMON__STATE_DIR", state_dir.to_str().unwrap())],
    )
}

/// Whether `received` holds, for every source in `sources`, an event observed after `since`
/// (RFC 3339 timestamps of one format compare as text).
fn each_observed_after(received: &[Received], sources: &[&str], since: &str) -> bool {
    sources.iter().all(|source| {
        received
            .iter()
            .any(|r| r.event.source == *source && r.event.timestamp.as_str() > since)
    })
}

/// Reads the stream (through a hub node that stays up) until every source in `sources` has an
/// event observed after `since`; returns how long that took from `started`.
async fn flowing_again(hub: &Hub, sources: &[&str], since: &str, started: Instant) -> Duration {
    let mut log = EventLog::open_within(&hub.url(2), "PROCESS_EVENTS", PATIENCE).await;
    let what = format!("events of {sources:?} observed after {since}");
    log.wait_until(&what, PATIENCE, |r| each_observed_after(r, sources, since))
        .await;
    started.elapsed()
}

/// Now, as event timestamps are written.
fn now() -> String {
    pc_eventd_events::event::timestamp(SystemTime::now())
}

/// One source's part of the stream, checked: each process's events in the order of their `seq`,
/// from 1 without a gap, each once.
fn check_source(log: &EventLog, source: &str) -> Reliability {
    let events: Vec<&LifecycleEvent> = log
        .received
        .iter()
        .map(|r| &r.event)
        .filter(|e| e.source == source)
        .collect();
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for event in &events {
        seqs.entry(&event.process).or_default().push(event.seq);
    }
    let mut expected = 0;
    for (process, seqs) in &seqs {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{source}/{process}: stored out of order or twice: {seqs:?}"
        );
        expected += seqs.last().copied().unwrap_or(0) as usize;
    }
    let title = format!("fleet of {HOSTS} hosts, 3-node hub: {source}");
    let row = log.report(&title, expected, |e| e.source == source);
    let ids: HashSet<&String> = events.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), events.len(), "{source}: no event stored twice");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_through_leaf_nodes_loses_and_repeats_nothing_through_hub_leaf_and_daemon_faults() {
    let mut hub = Hub::start().await;
    let mut hosts = Vec::new();
    for index in 0..HOSTS {
        hosts.push(Host::start(index, &hub).await);
    }
    let sources: Vec<String> = hosts.iter().map(|h| h.source.clone()).collect();
    let all: Vec<&str> = sources.iter().map(String::as_str).collect();
    let mut log = EventLog::open_within(&hub.url(2), "PROCESS_EVENTS", PATIENCE).await;
    log.wait_until("a crash of every host", PATIENCE, |r| {
        all.iter().all(|s| {
            r.iter()
                .any(|r| r.event.source == *s && r.event.event_type == Crashed)
        })
    })
    .await;

    // A hub node dies: the leaf nodes on it move to the others, the stream elects a leader.
    let (at, killed) = (now(), Instant::now());
    hub.kill(0);
    let hub_recovery = flowing_again(&hub, &all, &at, killed).await;
    hub.restart(0).await;

    // One host's leaf node is away for a minute: its daemon keeps its events in its outbox.
    let (at, down) = (now(), Instant::now());
    hosts[0].leaf.kill();
    flowing_again(&hub, &all[1..], &at, down).await;
    // The outage itself: a span of time, not a condition to wait for.
    tokio::time::sleep(LEAF_OUTAGE.saturating_sub(down.elapsed())).await;
    let back = Instant::now();
    hosts[0].leaf.restart().await;
    let leaf_recovery = flowing_again(&hub, &all[..1], &at, back).await;

    // One daemon is killed with SIGKILL and started again on its state.
    hosts[1].kill_daemon().await;
    let (at, restarted) = (now(), Instant::now());
    hosts[1].restart_daemon();
    let daemon_recovery = flowing_again(&hub, &all[1..2], &at, restarted).await;

    // The loops end; each host's last events must reach the state its process-compose is in.
    let mut at_rest = Vec::new();
    for host in &hosts {
        at_rest.push((host.source.clone(), host.stop_processes().await));
    }
    let mut log = EventLog::open_within(&hub.url(2), "PROCESS_EVENTS", PATIENCE).await;
    log.wait_until("every host's processes at rest", PATIENCE * 2, |r| {
        at_rest.iter().all(|(source, states)| {
            states.iter().all(|(name, status, restarts)| {
                r.iter()
                    .rev()
                    .find(|r| r.event.source == *source && r.event.process == *name)
                    .is_some_and(|r| {
                        r.event.state.status == *status && r.event.state.restarts == *restarts
                    })
            })
        })
    })
    .await;
    for host in &mut hosts {
        assert_eq!(host.daemon.terminate().await, Some(0), "{}", host.source);
    }
    log.read_to_end().await;
    for source in &all {
        let row = check_source(&log, source);
        assert_eq!(row, Reliability::exact(row.delivered), "{source}");
        assert!(row.delivered > 0);
    }
    println!(
        "FLEET\thub node killed: every host's events stored again after {hub_recovery:.1?}\t\
         leaf node back after {LEAF_OUTAGE:?}: its host's events stored after {leaf_recovery:.1?}\t\
         daemon kill -9 and restart: its events stored after {daemon_recovery:.1?}"
    );
}
