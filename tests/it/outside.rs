//! An outside client that knows only the JSON Schema: python's nats-py and jsonschema
//! (installed by scripts/install-peers.sh) read the stream and validate every event; the same
//! validator checks what `pc-eventd watch --json` prints.

use std::process::Stdio;
use std::time::Duration;

use pc_eventd_events::event::EventType::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::Stack;
use crate::support::binary::Binary;
use crate::support::compose::Release;
use crate::support::events::count;

const LONG: Duration = Duration::from_secs(30);

/// Runs tests/schema_client.py with `args`, feeding it `stdin`; returns its summary line.
async fn schema_client(args: &[&str], stdin: &str) -> serde_json::Value {
    let python = crate::support::peer_binary("TEST_PYTHON");
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(python)
        .arg(format!("{root}/tests/schema_client.py"))
        .arg("--schema")
        .arg(format!("{root}/events/schema/lifecycle-event.schema.json"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the schema client");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(LONG, child.wait_with_output())
        .await
        .expect("the schema client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schema client failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("a JSON summary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_that_knows_only_the_schema_decodes_every_event() {
    let mut stack = Stack::start_on(
        Release::Current,
        r#"
processes:
  web:
    command: "sleep 1000"
  flaky:
    namespace: jobs
    command: "sleep 0.2; exit 3"
    availability: { restart: on_failure, max_restarts: 2, backoff_seconds: 1 }
"#,
    )
    .await;
    stack
        .log
        .wait_until("three crashes", LONG, |r| {
            count(r, Some("flaky"), Crashed) >= 3
        })
        .await;
    stack.finish().await;
    let stored = stack.log.received.len();

    let nats_url = stack.nats_url();
    let summary = schema_client(&["--nats-url", &nats_url], "").await;
    assert_eq!(summary["validated"], stored, "{summary}");
    assert_eq!(summary["types"]["crashed"], 3, "{summary}");
    assert_eq!(summary["types"]["restarted"], 2, "{summary}");
    assert_eq!(
        summary["processes"],
        serde_json::json!(["default/web", "jobs/flaky"])
    );

    // What `watch --json` prints is exactly what was published, so it validates too.
    let mut watch = Binary::spawn(&[
        "watch",
        "--all",
        "--json",
        "--severity",
        "debug",
        "--nats-url",
        &nats_url,
    ]);
    let lines = watch.stdout_until(LONG, |l| l.len() >= stored).await;
    assert_eq!(watch.terminate().await, Some(0));
    let summary = schema_client(&["--stdin"], &(lines.join("\n") + "\n")).await;
    assert_eq!(summary["validated"], stored, "{summary}");
    stack.stop().await;
}
