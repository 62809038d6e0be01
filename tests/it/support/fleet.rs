//! The fleet's NATS, started from the files operators get (`packaging/nats/`, their settings in
//! the environment as a systemd EnvironmentFile would give them): a [`Hub`] of three clustered
//! nodes with JetStream, and [`LeafNode`]s connected to it as on each host. All on loopback;
//! each node has its own store directory and keeps its ports across restarts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::nats::{Listening, Process};
use super::{free_port, http_get};

/// How long a node may take, on a loaded 2-core machine, to answer its monitoring endpoint as
/// ready: a hub node to find its meta leader and catch up, a leaf node to reach the hub.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A listener on a port the server picks; pinned to that port for restarts.
const ANY_PORT: &str = "127.0.0.1:-1";

/// One nats-server run from a packaged configuration with `settings` as its environment.
struct Node {
    /// Declared before `dir`: the server is killed before its store is removed.
    process: Option<Process>,
    config: PathBuf,
    dir: TempDir,
    /// The configuration's variables (`NATS_…`); listeners on [`ANY_PORT`] are pinned to the
    /// ports the first start got, so a restart comes back on the same ones.
    settings: Vec<(&'static str, String)>,
    listening: Listening,
}

impl Node {
    /// Starts nats-server with `packaging/nats/{config}` and `settings`.
    fn start(config: &str, dir: TempDir, settings: Vec<(&'static str, String)>) -> Self {
        let mut node = Self {
            process: None,
            config: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging/nats")
                .join(config),
            dir,
            settings,
            listening: Listening {
                client: 0,
                leafnode: None,
                monitor: None,
            },
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let args: Vec<OsString> = vec!["-c".into(), self.config.clone().into()];
        let process = Process::start(&args, &self.settings, &self.dir.path().join("nats.log"));
        self.listening = process.listening;
        self.process = Some(process);
        let pinned = [
            ("NATS_CLIENT_LISTEN", Some(self.listening.client)),
            ("NATS_MONITOR_LISTEN", self.listening.monitor),
            ("NATS_LEAFNODE_LISTEN", self.listening.leafnode),
        ];
        for (name, port) in pinned {
            if let (Some(port), Some(setting)) =
                (port, self.settings.iter_mut().find(|(n, _)| *n == name))
            {
                setting.1 = format!("127.0.0.1:{port}");
            }
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.listening.client)
    }

    /// SIGKILL: no goodbye to its peers, its store left as it was.
    fn kill(&mut self) {
        self.process = None;
    }

    fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Polls monitoring endpoint `path` until `ready` holds of its status and body, or panics
    /// after [`READY_WITHIN`] with the last answer.
    async fn wait_until(&self, path: &str, what: &str, ready: impl Fn(u16, &str) -> bool) {
        let port = self
            .listening
            .monitor
            .expect("the packaged configurations have a monitoring listener");
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let answer = http_get(port, path).await;
            if let Ok((status, body)) = &answer
                && ready(*status, body)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} within {READY_WITHIN:?}: GET {path} last answered {answer:?}; log:\n{}",
                std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Three nodes of `packaging/nats/hub.conf` in one cluster, JetStream on each.
pub struct Hub {
    nodes: Vec<Node>,
}

impl Hub {
    /// Starts the three nodes and waits until each reports JetStream healthy (a meta leader
    /// elected).
    pub async fn start() -> Self {
        let routes: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let nodes = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let dir = tempfile::tempdir().expect("temp dir");
                let settings = vec![
                    ("NATS_SERVER_NAME", format!("hub-{i}")),
                    ("NATS_CLIENT_LISTEN", ANY_PORT.to_owned()),
                    ("NATS_MONITOR_LISTEN", ANY_PORT.to_owned()),
                    (
                        "NATS_STORE_DIR",
                        dir.path().join("store").display().to_string(),
                    ),
                    ("NATS_CLUSTER_LISTEN", route.clone()),
                    ("NATS_ROUTE_1", format!("nats-route://{}", routes[0])),
                    ("NATS_ROUTE_2", format!("nats-route://{}", routes[1])),
                    ("NATS_ROUTE_3", format!("nats-route://{}", routes[2])),
                    ("NATS_LEAFNODE_LISTEN", ANY_PORT.to_owned()),
                ];
                Node::start("hub.conf", dir, settings)
            })
            .collect();
        let hub = Self { nodes };
        for i in 0..hub.nodes.len() {
            hub.healthy(i).await;
        }
        hub
    }

    /// Every node's client URL, comma-separated (as `nats.url` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's leaf node URL (`nats-leaf://…`), for a leaf node's remote.
    pub fn leaf_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| {
                let port = node
                    .listening
                    .leafnode
                    .expect("hub.conf has a leaf listener");
                format!("nats-leaf://127.0.0.1:{port}")
            })
            .collect()
    }

    /// Which node is `name` (`hub-0` … `hub-2`, as JetStream names a leader).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|i| name == format!("hub-{i}"))
    }

    /// Kills node `i` with SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again (killing it first if it runs) on its ports and store, and waits
    /// until it reports JetStream healthy and knows the leader of every stream: until then it
    /// answers a stream info itself, from its copy as it was when it went down.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
        self.healthy(i).await;
        self.knows_every_leader(i).await;
    }

    async fn knows_every_leader(&self, i: usize) {
        let what = format!("hub-{i} knows the leader of every stream");
        self.nodes[i]
            .wait_until("/jsz?accounts=true&streams=true", &what, |status, body| {
                status == 200
                    && serde_json::from_str::<serde_json::Value>(body).is_ok_and(|jsz| {
                        jsz["account_details"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|account| account["stream_detail"].as_array())
                            .flatten()
                            .all(|stream| {
                                stream["cluster"]["leader"]
                                    .as_str()
                                    .is_some_and(|leader| !leader.is_empty())
                            })
                    })
            })
            .await;
    }

    async fn healthy(&self, i: usize) {
        let what = format!("hub-{i} reports JetStream healthy");
        self.nodes[i]
            .wait_until("/healthz", &what, |status, _| status == 200)
            .await;
    }
}

/// One host's `packaging/nats/leaf.conf`, its remote the hub's three leaf node URLs.
pub struct LeafNode {
    node: Node,
}

impl LeafNode {
    /// Starts a leaf node named `name` and waits until its connection to `hub` is up.
    pub async fn start(hub: &Hub, name: &str) -> Self {
        let hubs = hub.leaf_urls();
        let settings = vec![
            ("NATS_SERVER_NAME", name.to_owned()),
            ("NATS_CLIENT_LISTEN", ANY_PORT.to_owned()),
            ("NATS_MONITOR_LISTEN", ANY_PORT.to_owned()),
            ("NATS_HUB_1", hubs[0].clone()),
            ("NATS_HUB_2", hubs[1].clone()),
            ("NATS_HUB_3", hubs[2].clone()),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        let leaf = Self {
            node: Node::start("leaf.conf", dir, settings),
        };
        leaf.connected().await;
        leaf
    }

    /// Its client URL, where the host's daemon connects.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// Kills it with SIGKILL: the host's clients lose their server.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts it again on the same port (killing it first if it runs) and waits until its
    /// connection to the hub is up.
    pub async fn restart(&mut self) {
        self.node.restart();
        self.connected().await;
    }

    /// Waits until its connection to the hub is up, as its `/leafz` reports it.
    pub async fn connected(&self) {
        self.node
            .wait_until(
                "/leafz",
                "the leaf node connects to the hub",
                |status, body| {
                    status == 200
                        && serde_json::from_str::<serde_json::Value>(body)
                            .is_ok_and(|leafz| leafz["leafnodes"].as_u64() > Some(0))
                },
            )
            .await;
    }
}
