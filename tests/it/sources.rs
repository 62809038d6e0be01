//! Many sources in one stream: two hosts' daemons publishing into one nats-server, and a
//! consumer selecting one host, in both subject layouts.

use std::time::Duration;

use async_nats::jetstream::consumer;
use futures::StreamExt;
use pc_eventd_events::consumer::{Consumer, Filter, Received, Start, latest_per_process};
use pc_eventd_events::event::EventType::*;
use pc_eventd_events::event::SubjectLayout;
use pc_eventd_events::nats::NatsConfig;

use crate::consumer::history_ids;
use crate::support::binary::Binary;
use crate::support::compose::ProcessCompose;
use crate::support::daemon::{Daemon, config};
use crate::support::events::EventLog;
use crate::support::nats::NatsServer;

const LONG: Duration = Duration::from_secs(30);

/// The same process on every host: it runs a moment and fails.
const PROJECT: &str = r#"
processes:
  web:
    command: "sleep 0.3; exit 2"
    availability: { restart: "no" }
"#;

const HOSTS: [&str; 2] = ["web-01", "web-02"];

/// Two hosts (a process-compose and a daemon each, with its own source) publishing in `layout`
/// into one nats-server, once both hosts' `web` has crashed.
pub(crate) struct TwoHosts {
    pub nats: NatsServer,
    /// Held for their lifetime: dropping them stops them.
    hosts: Vec<(ProcessCompose, Daemon)>,
    pub log: EventLog,
}

impl TwoHosts {
    pub async fn start(layout: SubjectLayout) -> Self {
        let nats = NatsServer::start();
        let mut hosts = Vec::new();
        for source in HOSTS {
            let pc = ProcessCompose::start(PROJECT).await;
            let mut config = config(&pc.url(), &nats.url());
            config.process_compose.source = Some(source.into());
            config.nats.subject_layout = layout;
            hosts.push((pc, Daemon::spawn(config)));
        }
        let mut log = EventLog::open(&nats.url()).await;
        log.wait_until("both hosts' crash", LONG, |r| {
            HOSTS.iter().all(|host| {
                r.iter()
                    .any(|r| r.event.source == *host && r.event.event_type == Crashed)
            })
        })
        .await;
        Self { nats, hosts, log }
    }

    /// Ids of what the stream holds of `source`, in stream order.
    pub fn ids_of(&self, source: &str) -> Vec<String> {
        self.log
            .received
            .iter()
            .filter(|r| r.event.source == source)
            .map(|r| r.event.id.clone())
            .collect()
    }

    fn nats_config(&self, layout: SubjectLayout) -> NatsConfig {
        NatsConfig {
            url: self.nats.url(),
            subject_layout: layout,
            ..NatsConfig::default()
        }
    }
}

/// Ids of the stored messages on `subject`, selected by the server alone.
async fn server_selected_ids(nats_url: &str, subject: &str) -> Vec<String> {
    let js = crate::support::jetstream_at(nats_url).await;
    let stream = js.get_stream("PROCESS_EVENTS").await.unwrap();
    let created = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = created.cached_info().num_pending;
    let mut messages = created.messages().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..pending {
        let message = tokio::time::timeout(LONG, messages.next())
            .await
            .expect("a stored message in time")
            .unwrap()
            .unwrap();
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        ids.push(event["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_source_subjects_let_the_server_select_one_host() {
    let mut hosts = TwoHosts::start(SubjectLayout::BySource).await;
    hosts.log.read_to_end().await;
    for r in &hosts.log.received {
        let expected = format!(
            "core.process.{}.default.web.{}",
            r.event.source, r.event.event_type
        );
        assert_eq!(r.subject, expected);
        assert_eq!(r.event.subject, expected);
    }
    let web_01 = hosts.ids_of("web-01");
    assert!(web_01.len() >= 2, "started and crashed at least");
    // Any NATS client: a subject of the source's alone.
    assert_eq!(
        server_selected_ids(&hosts.nats.url(), "core.process.web-01.>").await,
        web_01
    );
    // The library: the source, with a process and a type on top.
    let nats = hosts.nats_config(SubjectLayout::BySource);
    let consumer = Consumer::connect(&nats).await.unwrap();
    let filter = Filter::default().with_source("web-01");
    assert_eq!(
        consumer.subjects(&filter).unwrap(),
        ["core.process.web-01.*.*.*"]
    );
    assert_eq!(history_ids(&consumer, &filter).await, web_01);
    let crashes = Filter::default()
        .with_source("web-02")
        .with_process("web")
        .with_type(Crashed);
    let crash_ids = history_ids(&consumer, &crashes).await;
    assert_eq!(crash_ids.len(), 1);
    let crash = hosts
        .log
        .received
        .iter()
        .find(|r| r.event.id == crash_ids[0]);
    assert!(crash.is_some_and(|r| r.event.source == "web-02" && r.event.event_type == Crashed));
    // Without a source, both hosts.
    assert_eq!(
        history_ids(&consumer, &Filter::default()).await.len(),
        hosts.log.received.len()
    );

    // `watch`, with the daemons' layout from the environment.
    let mut watch = Binary::spawn_with_env(
        &[
            "watch",
            "--nats-url",
            &hosts.nats.url(),
            "--source",
            "web-02",
            "--all",
            "--severity",
            "debug",
            "--json",
        ],
        &[("PC_EVENTD_NATS__SUBJECT_LAYOUT", "by_source")],
    );
    let web_02 = hosts.ids_of("web-02");
    let lines = watch
        .stdout_until(LONG, |lines| lines.len() >= web_02.len())
        .await;
    let printed: Vec<String> = lines
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(printed, web_02);
    assert_eq!(watch.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_subjects_keep_the_seed_scheme_and_a_source_filter_still_selects() {
    let mut hosts = TwoHosts::start(SubjectLayout::Plain).await;
    hosts.log.read_to_end().await;
    for r in &hosts.log.received {
        assert_eq!(
            r.subject,
            format!("core.process.default.web.{}", r.event.event_type)
        );
    }
    let nats = hosts.nats_config(SubjectLayout::Plain);
    let consumer = Consumer::connect(&nats).await.unwrap();
    for host in HOSTS {
        let filter = Filter::default().with_source(host);
        assert_eq!(history_ids(&consumer, &filter).await, hosts.ids_of(host));
    }
    // web-02's `web` runs and fails again: its events are now the last of every subject the
    // two hosts share, and web-01's last state is still found.
    hosts.hosts[1].0.start_process("web").await;
    hosts
        .log
        .wait_until("web-02's second given_up", LONG, |r| {
            r.iter()
                .filter(|r| r.event.source == "web-02" && r.event.event_type == GivenUp)
                .count()
                == 2
        })
        .await;
    let web_01_last = hosts.ids_of("web-01").pop().unwrap();
    let mut last_state = consumer
        .subscribe(
            &Filter::default().with_source("web-01"),
            Start::LastPerSubject,
        )
        .await
        .unwrap();
    let history = tokio::time::timeout(LONG, last_state.history())
        .await
        .expect("the last state is read in time")
        .unwrap();
    let latest = latest_per_process(
        history
            .into_iter()
            .filter_map(Received::into_event)
            .collect(),
    );
    let latest: Vec<&str> = latest.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(latest, [web_01_last.as_str()]);
    // A by_source reader of a plain stream finds nothing: the layouts never share a subject.
    let by_source = Consumer::connect(&hosts.nats_config(SubjectLayout::BySource))
        .await
        .unwrap();
    assert!(history_ids(&by_source, &Filter::default()).await.is_empty());
}
