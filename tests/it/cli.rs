//! The `pc-eventd` binary: `run` with the seed's flags, `watch` filters, `config check`.

use std::time::Duration;

use pc_eventd_events::event::{EventType::*, LifecycleEvent};

use crate::support::binary::Binary;
use crate::support::compose::ProcessCompose;
use crate::support::events::EventLog;
use crate::support::nats::NatsServer;

#[tokio::test]
async fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pc-eventd.toml");
    std::fs::write(
        &file,
        "[process_compose]\ntoken = \"super-secret-token-value-123\"\n[nats]\nurl = \"nats://10.0.0.1:4222\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = Binary::output(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[("PC_EVENTD_NATS__STREAM__REPLICAS", "3")],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("url = \"nats://10.0.0.1:4222\""),
        "{stdout}"
    );
    assert!(stdout.contains("replicas = 3"), "{stdout}");
    assert!(stdout.contains("token = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("super-secret") && !stderr.contains("super-secret"));
}

#[tokio::test]
async fn config_errors_name_the_key_and_source_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[nats]\nurll = \"nats://x\"\n").unwrap();
    let file = file.to_str().unwrap();

    let (code, _, stderr) = Binary::output(&["config", "check", "--config", file], &[]).await;
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("nats.urll") && stderr.contains(file),
        "{stderr}"
    );

    // the daemon refuses the same file the same way
    let (code, _, stderr) = Binary::output(&["run", "--config", file], &[]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("nats.urll"), "{stderr}");

    let (code, _, stderr) = Binary::output(
        &["config", "check"],
        &[("PC_EVENTD_PROCESS_COMPOSE__POLL_INTERVAL", "whenever")],
    )
    .await;
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("PC_EVENTD_PROCESS_COMPOSE__POLL_INTERVAL"),
        "{stderr}"
    );

    let (code, _, stderr) = Binary::output(&["watch", "--config", "/nonexistent.toml"], &[]).await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_the_seed_flags_and_stops_cleanly_on_sigterm() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let mut daemon = Binary::spawn(&[
        "run",
        "--compose-port",
        &pc.port().to_string(),
        "--nats-url",
        &nats.url(),
        "--poll-interval",
        "200ms",
    ]);
    let mut log = EventLog::open(&nats.url()).await;
    let started = log.wait_for("web", Started).await;
    assert_eq!(started.source, pc.url(), "the source defaults to the URL");
    assert_eq!(daemon.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_by_process_type_and_namespace() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start(crate::support::THREE_NAMESPACES).await;
    let url = nats.url();
    let mut by_name_json =
        Binary::spawn(&["watch", "--nats-url", &url, "--process", "nats", "--json"]);
    let mut by_type = Binary::spawn(&["watch", "--nats-url", &url, "--type", "crashed"]);
    let mut by_ns_name = Binary::spawn(&["watch", "--nats-url", &url, "--process", "default/web"]);
    let mut by_namespace = Binary::spawn(&["watch", "--nats-url", &url, "--namespace", "jobs"]);
    for watcher in [
        &mut by_name_json,
        &mut by_type,
        &mut by_ns_name,
        &mut by_namespace,
    ] {
        watcher
            .stderr_line_containing("Watching events", Duration::from_secs(10))
            .await;
    }
    let daemon =
        crate::support::daemon::Daemon::spawn(crate::support::daemon::config(&pc.url(), &url));
    let long = Duration::from_secs(20);

    // a bare name matches it in its namespace (infra), and --json prints whole events
    let lines = by_name_json
        .stdout_until(long, |l| {
            l.iter().any(|l| l.contains(r#""type":"started""#))
        })
        .await;
    for line in &lines {
        let event: LifecycleEvent = serde_json::from_str(line).expect("one JSON event per line");
        assert_eq!(
            (event.process.as_str(), event.namespace.as_str()),
            ("nats", "infra")
        );
    }

    // a type matches every namespace; stdout is a pipe, so no icons or colours
    let lines = by_type.stdout_until(long, |l| !l.is_empty()).await;
    assert!(
        lines[0].ends_with(" ERROR jobs/crasher crashed (exit=3)"),
        "{lines:?}"
    );
    assert_eq!(
        lines[0].len(),
        "09:53:31.123 ERROR jobs/crasher crashed (exit=3)".len()
    );

    // NS/NAME, in the seed's text format
    let lines = by_ns_name
        .stdout_until(long, |l| l.iter().any(|l| l.ends_with(" started")))
        .await;
    assert!(
        lines.iter().all(|l| l.contains(" default/web ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" INFO  default/web started")),
        "{lines:?}"
    );

    let lines = by_namespace
        .stdout_until(long, |l| l.iter().any(|l| l.contains("crashed")))
        .await;
    assert!(
        lines.iter().all(|l| l.contains(" jobs/crasher ")),
        "{lines:?}"
    );

    daemon.stop().await.unwrap();
    for mut watcher in [by_name_json, by_type, by_ns_name, by_namespace] {
        assert_eq!(
            watcher.terminate().await,
            Some(0),
            "watch exits 0 on SIGTERM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let compose_port = pc.port().to_string();
    let nats_url = nats.url();
    let compose = ["--compose-port", &compose_port];
    let bus = ["--nats-url", nats_url.as_str()];
    let mut daemon = Binary::spawn(&[&["run"][..], &compose, &bus].concat());
    let mut log = EventLog::open(&nats_url).await;
    log.wait_for("web", Started).await;
    let mut remediate = Binary::spawn(&[&["remediate"][..], &compose, &bus].concat());
    // (no alert is due: nothing crashes, so the URL is never called)
    let hook = ["--url", "http://127.0.0.1:9/hook"];
    let mut alert = Binary::spawn(&[&["alert"][..], &bus, &hook].concat());
    remediate
        .stderr_line_containing("remediating", Duration::from_secs(20))
        .await;
    alert
        .stderr_line_containing("alerting", Duration::from_secs(20))
        .await;
    let mut written = Vec::new();
    for binary in [&mut daemon, &mut remediate, &mut alert] {
        assert_eq!(binary.terminate().await, Some(0));
        written.append(&mut binary.stderr_seen);
        written.extend(binary.rest_of_stderr().await);
    }
    assert!(
        written.iter().any(|line| line.contains(" INFO ")),
        "{written:?}"
    );
    assert!(
        written.iter().all(|line| !line.contains('\x1b')),
        "escape codes in a log written to a pipe: {written:?}"
    );
}

#[tokio::test]
async fn help_and_completions() {
    let (code, stdout, _) = Binary::output(&["--help"], &[]).await;
    assert_eq!(code, Some(0));
    for command in ["run", "watch", "config", "completions"] {
        assert!(
            stdout.contains(&format!("  {command} ")),
            "{command} missing:\n{stdout}"
        );
    }
    let (code, stdout, _) = Binary::output(&["run", "--help"], &[]).await;
    assert_eq!(code, Some(0));
    for flag in [
        "--compose-port",
        "--nats-url",
        "--poll-interval",
        "--config",
        "SIGHUP",
    ] {
        assert!(stdout.contains(flag), "{flag} missing:\n{stdout}");
    }
    let (code, stdout, _) = Binary::output(&["completions", "bash"], &[]).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("complete -F") && stdout.contains("pc-eventd"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_its_reader_goes_away() {
    let nats = NatsServer::start();
    let pc = ProcessCompose::start("processes:\n  web:\n    command: \"sleep 1000\"\n").await;
    let daemon = crate::support::daemon::Daemon::spawn(crate::support::daemon::config(
        &pc.url(),
        &nats.url(),
    ));
    EventLog::open(&nats.url())
        .await
        .wait_for("web", Started)
        .await;
    // `watch --all | head -1`: the replay's first line, then the reader is gone, and nothing
    // else happens (web sleeps on), so no later line would tell it.
    let mut watch = Binary::spawn(&["watch", "--all", "--nats-url", &nats.url()]);
    watch
        .stdout_until(Duration::from_secs(20), |lines| !lines.is_empty())
        .await;
    watch.close_stdout();
    assert_eq!(watch.exited().await, Some(0));
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gives_up_on_nats_that_stays_dead() {
    // At start: nothing listens.
    let nobody = format!("nats://127.0.0.1:{}", crate::support::free_port());
    let (code, _, stderr) = Binary::output(
        &["watch", "--nats-url", &nobody, "--give-up-after", "2s"],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("retrying for up to 2s"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no answer from NATS at {nobody} for 2s; giving up"
        )),
        "{stderr}"
    );
    // Later: the server goes away and stays away.
    let mut nats = NatsServer::start();
    let url = nats.url();
    let mut watch = Binary::spawn(&["watch", "--nats-url", &url, "--give-up-after", "2s"]);
    watch
        .stderr_line_containing("Watching events", Duration::from_secs(20))
        .await;
    nats.stop();
    assert_eq!(watch.exited().await, Some(1));
    let said = watch.rest_of_stderr().await.join("\n");
    assert!(
        said.contains(&format!("no answer from NATS at {url} for 2s; giving up")),
        "{said}"
    );
}
