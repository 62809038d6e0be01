//! The event kinds no peer gives, against real process-compose and nats-server: a crash's
//! last output, given up, silence, the file watcher's restarts, and the per-process metrics.
//! (Resource pressure, with the remediator acting on it, is in remediate.rs.)

use std::time::Duration;

use pc_eventd_events::event::{EventType::*, GivenUpPolicy, Reason, Severity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::compose::Release;
use crate::support::{Stack, eventually};

const LONG: Duration = Duration::from_secs(30);

/// Every daemon here samples usage and output times often.
fn sampling_fast(config: &mut pc_eventd::Config) {
    config.conditions.sample_interval = Duration::from_millis(300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_carries_its_last_output_and_restart_no_gives_up_once() {
    for server in [Release::Current, Release::BeforeStream] {
        let mut stack = Stack::start_on(
            server,
            r#"
processes:
  failing:
    command: "echo starting; echo 'DB_PASSWORD=hunter2'; echo 'last words'; sleep 1; exit 3"
    "#,
        )
        .await;
        let crashed = stack.log.wait_for("failing", Crashed).await;
        assert_eq!(crashed.exit_code, Some(3), "{server:?}");
        let output = crashed
            .output
            .clone()
            .expect("the crash carries its output");
        assert_eq!(
            output.lines,
            ["starting", "[REDACTED]", "last words"],
            "{server:?}"
        );
        assert_eq!((output.redacted, output.truncated), (1, false));
        assert_eq!(output.unavailable, None);

        let given_up = stack.log.wait_for("failing", GivenUp).await;
        assert_eq!(given_up.severity, Severity::Critical);
        let said = given_up.given_up.clone().unwrap();
        assert_eq!((said.policy, said.max_restarts), (GivenUpPolicy::No, None));
        assert_eq!(given_up.subject, "core.process.default.failing.given_up");
        stack.finish().await;
        assert_eq!(
            stack.log.of("failing", GivenUp).len(),
            1,
            "{}",
            stack.log.dump()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_restarts_spent_gives_up_once_after_the_last_crash() {
    let mut stack = Stack::start_on(
        Release::Current,
        r#"
processes:
  flaky:
    command: "echo run; sleep 0.3; exit 2"
    availability:
      restart: on_failure
      max_restarts: 2
    "#,
    )
    .await;
    let given_up = stack.log.wait_for("flaky", GivenUp).await;
    let said = given_up.given_up.clone().unwrap();
    assert_eq!(said.policy, GivenUpPolicy::MaxRestarts);
    assert_eq!((said.restarts, said.max_restarts), (2, Some(2)));
    stack.finish().await;
    let log = &stack.log;
    assert_eq!(log.of("flaky", Crashed).len(), 3, "{}", log.dump());
    assert_eq!(log.of("flaky", GivenUp).len(), 1, "{}", log.dump());
    let last_crash = log.of("flaky", Crashed)[2].seq;
    assert_eq!(
        given_up.seq,
        last_crash + 1,
        "given up right after the last crash"
    );
    for crash in log.of("flaky", Crashed) {
        assert_eq!(
            crash.output.unwrap().lines.last().map(String::as_str),
            Some("run")
        );
    }
}

/// A proxy to process-compose that never answers a read of the logs: a log read that takes
/// longer than the bound, on demand.
async fn proxy_stalling_logs(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let Ok(n) = client.read(&mut head).await else {
                    return;
                };
                head.truncate(n);
                if head.starts_with(b"GET /process/logs/") {
                    // Hold the connection open, unanswered, until the client gives up.
                    let _ = client.read(&mut [0u8; 1]).await;
                    return;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_output_read_does_not_hold_the_crash_back() {
    let mut stack = Stack::start_on(
        Release::Current,
        r#"
processes:
  idle:
    command: "sleep 1000"
    "#,
    )
    .await;
    // A second daemon, through the stalling proxy, with its own stream name: its events are the
    // ones read here.
    stack.stop_daemon().await;
    let proxy = proxy_stalling_logs(stack.pc.port()).await;
    let mut config =
        crate::support::daemon::config(&format!("http://127.0.0.1:{proxy}"), &stack.nats_url());
    config.crash_output.read_timeout = Duration::from_millis(300);
    let daemon = crate::support::daemon::Daemon::spawn(config);
    // A crash: the process is killed from outside, with no stop request.
    let pid = stack.log.wait_for("idle", Started).await.state.pid;
    assert!(pid > 0);
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let crashed = stack.log.wait_for("idle", Crashed).await;
    let output = crashed
        .output
        .expect("an output object says why it is empty");
    assert!(output.lines.is_empty());
    assert_eq!(
        output.unavailable.as_deref(),
        Some("the output was not read within 300ms")
    );
    daemon.stop().await.expect("the daemon ends without error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_process_is_reported_once_and_again_when_it_speaks() {
    let mut stack = Stack::start_configured(
        Release::Current,
        r#"
processes:
  quiet:
    command: "echo hello; sleep 3; echo again; sleep 1000"
  monitored:
    command: "echo once; sleep 1000"
    monitor_for: silence
    monitor_silence_threshold: 1s
  chatty:
    command: "while true; do echo tick; sleep 0.2; done"
    "#,
        |config| {
            sampling_fast(config);
            config.conditions.silence = vec![
                serde_json::from_value(
                    serde_json::json!({"processes": ["quiet", "chatty"], "after": "1s"}),
                )
                .unwrap(),
            ];
        },
    )
    .await;
    let silent = stack.log.wait_for("quiet", Silent).await;
    let said = silent.silence.clone().unwrap();
    assert_eq!(said.threshold_seconds, 1);
    assert!(said.last_output.is_some(), "it printed `hello`");
    let resumed = stack.log.wait_for("quiet", OutputResumed).await;
    assert!(resumed.seq > silent.seq);
    let silent_for = resumed.silence.unwrap().silent_seconds.unwrap();
    assert!((2..=4).contains(&silent_for), "silent for {silent_for}s");

    // process-compose's own `monitor_for: silence`, with no rule of ours
    let monitored = stack.log.wait_for("monitored", Silent).await;
    assert_eq!(monitored.silence.unwrap().threshold_seconds, 1);

    stack
        .log
        .wait_until("quiet silent again", LONG, |r| {
            r.iter()
                .filter(|r| r.event.process == "quiet" && r.event.event_type == Silent)
                .count()
                == 2
        })
        .await;
    stack.finish().await;
    let log = &stack.log;
    assert!(log.of("chatty", Silent).is_empty(), "{}", log.dump());
    assert_eq!(log.of("monitored", Silent).len(), 1, "once: {}", log.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_watch_restart_is_marked_and_is_not_a_crash() {
    let mut stack = Stack::start_on(
        Release::Current,
        r#"
processes:
  api:
    command: "sleep 1000"
    availability:
      restart: always
    watch:
      # Long enough that the writes of one change are one trigger even on a busy machine.
      debounce: 1s
      paths:
        - path: $WORK
          include: ["*.rs"]
    "#,
    )
    .await;
    let first = stack.log.wait_for("api", Started).await;
    // The watcher is armed once the project's first processes are launched; it says so in
    // process-compose's log. One change, then: a second one during the restart would make
    // another.
    let pc_log = stack.pc.work_dir().join("process-compose.log");
    assert!(
        eventually(LONG, || std::fs::read_to_string(&pc_log)
            .is_ok_and(|log| log.contains("Watching files for 1 process")))
        .await,
        "the watcher never armed"
    );
    std::fs::write(stack.pc.work_dir().join("main.rs"), "// changed").unwrap();
    let restarted = stack.log.wait_for("api", Restarted).await;
    assert_eq!(
        restarted.reason,
        Some(Reason::FileWatch),
        "{}",
        stack.log.dump()
    );
    assert_ne!(restarted.state.pid, first.state.pid);
    stack.finish().await;
    let log = &stack.log;
    assert!(log.of("api", Crashed).is_empty(), "{}", log.dump());
    assert!(log.of("api", GivenUp).is_empty(), "{}", log.dump());
    for stop in log.of("api", Stopped) {
        assert_eq!(stop.reason, Some(Reason::FileWatch), "{}", log.dump());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_process_metrics_are_opt_in_and_capped() {
    let stack = Stack::start_configured(
        Release::Current,
        r#"
processes:
  a-web:
    command: "sleep 1000"
    readiness_probe:
      exec:
        command: "true"
      period_seconds: 1
  b-db:
    command: "sleep 1000"
  c-worker:
    command: "sleep 1000"
    "#,
        |config| {
            sampling_fast(config);
            config.health.process_metrics = true;
            config.health.process_metrics_limit = 2;
        },
    )
    .await;
    let status = stack.daemon.as_ref().unwrap().status.clone();
    let series = |name: &str| format!("source=\"test\",namespace=\"default\",name=\"{name}\"");
    let expected = [
        format!("pc_eventd_process_up{{{}}} 1", series("a-web")),
        format!("pc_eventd_process_ready{{{}}} 1", series("a-web")),
        format!("pc_eventd_process_up{{{}}} 1", series("b-db")),
        format!("pc_eventd_process_restarts{{{}}} 0", series("b-db")),
        format!("pc_eventd_process_exit_code{{{}}} 0", series("b-db")),
        format!("pc_eventd_process_memory_bytes{{{}}} ", series("b-db")),
        format!("pc_eventd_process_cpu_percent{{{}}} ", series("b-db")),
        "pc_eventd_process_series_omitted 1".to_owned(),
        "pc_eventd_processes_given_up 0".to_owned(),
        "pc_eventd_processes_under_pressure{resource=\"memory\"} 0".to_owned(),
    ];
    let all_there = eventually(LONG, || {
        let text = status.encode_metrics();
        expected.iter().all(|line| text.contains(line))
    })
    .await;
    let text = status.encode_metrics();
    assert!(all_there, "missing some of {expected:#?} in:\n{text}");
    assert!(
        !text.contains("name=\"c-worker\""),
        "the cap leaves the third out:\n{text}"
    );
    let memory: i64 = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "pc_eventd_process_memory_bytes{{{}}}",
                series("b-db")
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(memory > 0, "a sampled RSS: {memory}");

    // Every metric the shipped alert rules read is one this daemon exports.
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging/prometheus/pc-eventd.rules.yml"),
    )
    .unwrap();
    // The expressions: neither comments nor the annotations' prose.
    let expressions: String = rules
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !["#", "summary:", "description:"]
                .iter()
                .any(|prose| line.starts_with(prose))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut named: Vec<&str> = expressions
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("pc_eventd_") && !word.ends_with('_'))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 6, "{named:?}");
    for metric in named {
        let family = metric.strip_suffix("_total").unwrap_or(metric);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the rules read {metric}, which the daemon does not export:\n{text}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_follow_the_last_frame_of_a_burst() {
    let stack = Stack::start_configured(
        Release::Current,
        r#"
processes:
  web:
    command: "sleep 1000"
    "#,
        |config| {
            // No sample before the default reconcile (30 s): only frames move the gauges.
            config.conditions.sample_interval = Duration::from_secs(60);
            config.health.process_metrics = true;
        },
    )
    .await;
    let status = stack.daemon.as_ref().unwrap().status.clone();
    let up = |value: u8| {
        format!(
            "pc_eventd_process_up{{source=\"test\",namespace=\"default\",name=\"web\"}} {value}"
        )
    };
    assert!(eventually(LONG, || status.encode_metrics().contains(&up(1))).await);
    // A stop is two frames milliseconds apart (Terminating, Completed): the second comes
    // within the second after the first was reported, and must not wait for the reconcile.
    stack.pc.stop_process("web").await;
    let followed = eventually(Duration::from_secs(10), || {
        status.encode_metrics().contains(&up(0))
    })
    .await;
    assert!(followed, "{}", status.encode_metrics());
    stack.stop().await;
}
