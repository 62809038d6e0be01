//! `pc-eventd dashboard` in a real browser (Debian's chromium over WebDriver), against a real
//! nats-server, the real process-compose and the daemon. Screenshots of each state are kept in
//! `target/tmp/dashboard-screenshots/`.

use std::time::Duration;

use pc_eventd_events::event::{
    EventType, EventsLost, LifecycleEvent, Pressure, ProcessOutput, Resource, Silence,
    SubjectLayout, SubjectScheme, example_event, timestamp,
};
use pc_eventd_events::nats::{NatsConfig, StreamConfig};
use pc_eventd_events::publish::{Message, Publisher};
use pc_eventd_events::remediation::{Action, RemediationEvent};
use serde_json::{Value, json};

use crate::support::binary::Binary;
use crate::support::browser::Browser;
use crate::support::compose::ProcessCompose;
use crate::support::daemon::{self, Daemon};
use crate::support::events::EventLog;
use crate::support::nats::NatsServer;

/// Three processes in two namespaces; `crasher` prints four lines (markup, a secret) and exits
/// 3 when its file `crash` appears (`restart: no`: the daemon then says it gave up), and the
/// one named like markup stays up.
const PROJECT: &str = r#"
processes:
  web:
    command: "sleep 1000"
  nats:
    command: "sleep 1000"
    namespace: infra
  crasher:
    command: "while [ ! -f $WORK/crash ]; do sleep 0.1; done; rm -f $WORK/crash; echo 'connecting to the queue'; echo 'password=hunter2'; echo 'retrying'; echo '<b>queue unreachable</b>: giving up'; exit 3"
    namespace: jobs
    availability:
      restart: "no"
  '<img src=x onerror=window.__xss=1>':
    command: "sleep 1000"
"#;

const MARKUP_NAME: &str = "<img src=x onerror=window.__xss=1>";

/// What `crasher` printed before it crashed, as its `crashed` event carries it: redacted by
/// the daemon's default patterns.
const CRASH_OUTPUT: &str =
    "connecting to the queue\n[REDACTED]\nretrying\n<b>queue unreachable</b>: giving up";

const PATIENCE: Duration = Duration::from_secs(20);

/// The peers, the daemon publishing the project's events, and the dashboard.
struct Stack {
    nats: NatsServer,
    compose: ProcessCompose,
    /// Held for its lifetime: dropping it stops it.
    _daemon: Daemon,
    dashboard: Binary,
    url: String,
}

impl Stack {
    async fn start() -> Self {
        let nats = NatsServer::start();
        let compose = ProcessCompose::start(PROJECT).await;
        let daemon = Daemon::spawn(daemon::config(&compose.url(), &nats.url()));
        let mut log = EventLog::open(&nats.url()).await;
        log.wait_for("web", EventType::StatusChanged).await;
        let (dashboard, url) = start_dashboard(&nats.url()).await;
        Self {
            nats,
            compose,
            _daemon: daemon,
            dashboard,
            url,
        }
    }

    /// The stack, and a browser with the dashboard open.
    async fn start_with_page() -> (Self, Browser) {
        let stack = Self::start().await;
        let browser = Browser::start().await;
        open(&browser, &stack.url).await;
        (stack, browser)
    }

    /// Makes `crasher` exit 3.
    fn crash(&self) {
        std::fs::write(self.compose.work_dir().join("crash"), "").expect("write the crash file");
    }
}

/// Starts `pc-eventd dashboard` on a free loopback port; returns it and the URL it printed.
async fn start_dashboard(nats_url: &str) -> (Binary, String) {
    start_dashboard_at(nats_url, "127.0.0.1:0", &[]).await
}

async fn start_dashboard_at(
    nats_url: &str,
    listen: &str,
    env: &[(&str, &str)],
) -> (Binary, String) {
    let args = ["dashboard", "--listen", listen, "--nats-url", nats_url];
    let mut dashboard = Binary::spawn_with_env(&args, env);
    let lines = dashboard
        .stdout_until(PATIENCE, |lines| {
            lines.iter().any(|l| l.contains("http://"))
        })
        .await;
    let url = lines
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .expect("the dashboard prints its URL")
        .to_owned();
    (dashboard, url)
}

/// A JS expression: the row of process `name` (in any namespace), or null.
fn row(name: &str) -> String {
    format!(
        "[...document.querySelectorAll('#process-groups tr[data-key]')].find(r => r.dataset.key.endsWith('\\u0000' + {}))",
        json!(name)
    )
}

/// The text of every cell of process `name`'s row.
async fn row_cells(browser: &Browser, name: &str) -> Vec<String> {
    let script = format!(
        "const r = {}; return r ? [...r.children].map(c => c.textContent) : null;",
        row(name)
    );
    let cells = browser.run(&script, vec![]).await;
    serde_json::from_value(cells).unwrap_or_default()
}

/// The processes the page lists, by name, in page order.
async fn listed(browser: &Browser) -> Vec<String> {
    let names = browser
        .run(
            "return [...document.querySelectorAll('#process-groups tr[data-key] td.name a')].map(a => a.textContent);",
            vec![],
        )
        .await;
    serde_json::from_value(names).unwrap()
}

/// The timeline's rows as (key, type, text), newest first.
async fn timeline(browser: &Browser) -> Vec<(String, String, String)> {
    let items = browser
        .run(
            "return [...document.querySelectorAll('#events li')].map(li => [li.dataset.key, li.dataset.type, li.textContent]);",
            vec![],
        )
        .await;
    serde_json::from_value(items).unwrap()
}

/// Waits until the page shows the banner `id` (`banner-nats`, `banner-server`).
async fn wait_for_banner(browser: &Browser, id: &str) {
    let shown = format!("return !document.getElementById({}).hidden;", json!(id));
    browser.wait_until(id, PATIENCE, &shown).await;
}

/// Waits until the page lists the project's four processes.
async fn wait_for_all_processes(browser: &Browser) {
    browser
        .wait_until(
            "all four processes",
            PATIENCE,
            "return document.querySelectorAll('#process-groups tr[data-key]').length === 4;",
        )
        .await;
}

/// What the stream holds, the timeline shows: each event once, newest first, in stream order.
async fn assert_the_timeline_is_the_stream(browser: &Browser, log: &mut EventLog) {
    log.read_to_end().await;
    let page_ids = timeline_ids(browser).await;
    let stream_ids: Vec<String> = log
        .received
        .iter()
        .rev()
        .map(|r| r.event.id.clone())
        .collect();
    assert_eq!(page_ids, stream_ids, "the page and the stream differ");
}

/// The ids of the timeline's rows, newest first.
async fn timeline_ids(browser: &Browser) -> Vec<String> {
    let ids = browser
        .run(
            "return [...document.querySelectorAll('#events li')].map(li => li.dataset.id);",
            vec![],
        )
        .await;
    serde_json::from_value(ids).unwrap()
}

async fn open(browser: &Browser, url: &str) {
    browser.client.goto(url).await.expect("open the dashboard");
    browser
        .wait_until(
            "the end of the backlog",
            PATIENCE,
            "return document.body.dataset.live === 'true';",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_processes_and_shows_a_crash_without_a_reload() {
    let (stack, browser) = Stack::start_with_page().await;
    wait_for_all_processes(&browser).await;
    let mut names = listed(&browser).await;
    names.sort();
    assert_eq!(names, [MARKUP_NAME, "crasher", "nats", "web"]);
    // Grouped by source and namespace: default, infra, jobs.
    let groups = browser
        .run(
            "return [...document.querySelectorAll('.group h3 .ns')].map(n => n.textContent);",
            vec![],
        )
        .await;
    assert_eq!(groups, json!(["default", "infra", "jobs"]));
    let web = row_cells(&browser, "web").await;
    assert_eq!(web[1], "Running", "{web:?}");
    assert!(web[5].parse::<u32>().is_ok(), "a pid: {web:?}");
    browser.screenshot("processes").await;

    // The page is never reloaded: a mark set now is still there after the crash shows.
    browser.run("window.__sameLoad = true;", vec![]).await;
    stack.crash();
    // restart: no, so the daemon says it gave up: the row is marked so, critical.
    browser
        .wait_until(
            "crasher given up",
            PATIENCE,
            &format!(
                "const r = {}; return !!r && r.classList.contains('st-crit') && r.classList.contains('given-up');",
                row("crasher")
            ),
        )
        .await;
    let crasher = row_cells(&browser, "crasher").await;
    assert_eq!(crasher[1], "given up (Completed)", "{crasher:?}");
    assert_eq!(crasher[4], "3", "the exit code: {crasher:?}");
    browser
        .wait_until(
            "the crash in the timeline",
            PATIENCE,
            "return [...document.querySelectorAll('#events li')].some(li => li.dataset.type === 'crashed' && li.textContent.includes('jobs/crasher crashed (exit=3)'));",
        )
        .await;
    assert_eq!(
        browser
            .run("return window.__sameLoad === true;", vec![])
            .await,
        Value::Bool(true)
    );
    assert_the_crash_output_shows_as_text(&browser).await;
    assert_given_up_is_critical(&browser).await;
    browser.screenshot("crash").await;
    // Unfolded: every line.
    browser
        .run(
            &format!("{CRASH_ROW}.querySelector('details.output summary').click();"),
            vec![],
        )
        .await;
    browser
        .wait_until(
            "the output unfolded",
            PATIENCE,
            &format!("return {CRASH_ROW}.querySelector('details.output').open;"),
        )
        .await;
    browser.screenshot("crash-output").await;

    // Its own view: the history, the chart, the last crash.
    browser
        .run(
            &format!("{}.querySelector('td.name a').click();", row("crasher")),
            vec![],
        )
        .await;
    browser
        .wait_until(
            "the last crash in the process view",
            PATIENCE,
            "return document.getElementById('pv-last-crash').textContent.startsWith('exit code 3');",
        )
        .await;
    let view = browser
        .run(
            "return [location.search, document.querySelectorAll('#pv-events li').length, document.querySelectorAll('#pv-chart rect.crashes').length];",
            vec![],
        )
        .await;
    assert_eq!(view[0], json!("?view_source=test&view=jobs%2Fcrasher"));
    assert!(view[1].as_u64().unwrap() >= 2, "{view}");
    assert_eq!(view[2], json!(24));
    // The last crash with what it printed, unfolded, as text.
    let last_crash = browser
        .run(
            "const box = document.getElementById('pv-last-crash'); \
             const out = box.querySelector('details.output'); \
             return out ? [out.open, out.querySelector('pre').textContent, box.querySelectorAll('b').length] : null;",
            vec![],
        )
        .await;
    assert_eq!(last_crash, json!([true, CRASH_OUTPUT, 0]));
    browser.screenshot("process").await;

    // Back to all processes: the type filter given_up narrows both views to the one that gave up.
    browser
        .run("document.getElementById('pv-close').click();", vec![])
        .await;
    browser
        .client
        .find(fantoccini::Locator::Id("f-type"))
        .await
        .unwrap()
        .select_by_value("given_up")
        .await
        .expect("the type filter offers given_up");
    browser
        .wait_until(
            "only the given_up",
            PATIENCE,
            "return document.querySelectorAll('#events li').length === 1 \
             && document.querySelectorAll('#process-groups tr[data-key]').length === 1;",
        )
        .await;
    let items = timeline(&browser).await;
    assert_eq!(items[0].1, "given_up", "{items:?}");
    assert!(
        items[0]
            .2
            .contains("jobs/crasher given_up (policy=no, restarts=0)"),
        "{items:?}"
    );
    assert_eq!(listed(&browser).await, ["crasher"]);
    let url = browser.client.current_url().await.unwrap().to_string();
    assert!(url.ends_with("/?type=given_up"), "{url}");
    browser.close().await;
    drop(stack);
}

/// A JS expression: the timeline's row of crasher's crash.
const CRASH_ROW: &str = "[...document.querySelectorAll('#events li')].find(li => li.dataset.type === 'crashed' && li.textContent.includes('jobs/crasher crashed'))";

/// Crasher's crash row shows what it printed: folded to its last line, every line as text
/// (markup stays characters, no element), the secret redacted and the count said.
async fn assert_the_crash_output_shows_as_text(browser: &Browser) {
    browser
        .wait_until(
            "the crash's output",
            PATIENCE,
            &format!("return !!{CRASH_ROW}.querySelector('details.output pre');"),
        )
        .await;
    let shown = browser
        .run(
            &format!(
                "const out = {CRASH_ROW}.querySelector('details.output'); \
                 return [out.open, out.querySelector('summary .last').textContent, \
                   out.querySelector('summary .notes').textContent, out.querySelector('pre').textContent, \
                   document.querySelectorAll('b').length, document.body.textContent.includes('hunter2')];"
            ),
            vec![],
        )
        .await;
    assert_eq!(
        shown,
        json!([
            false,
            "<b>queue unreachable</b>: giving up",
            "4 lines · 1 secret redacted",
            CRASH_OUTPUT,
            0,
            false
        ])
    );
}

/// The given_up row and the process's row have the critical style: stronger than error's.
async fn assert_given_up_is_critical(browser: &Browser) {
    browser
        .wait_until(
            "the given_up in the timeline",
            PATIENCE,
            "return [...document.querySelectorAll('#events li')].some(li => li.dataset.type === 'given_up');",
        )
        .await;
    let styles = browser
        .run(
            &format!(
                "const li = [...document.querySelectorAll('#events li')].find(li => li.dataset.type === 'given_up'); \
                 const crash = {CRASH_ROW}; \
                 const style = (node) => getComputedStyle(node); \
                 const row = {}; \
                 return [li.classList.contains('critical'), li.querySelector('.sev').textContent, \
                   style(li.querySelector('.sev')).backgroundColor, style(li).backgroundColor, \
                   style(crash.querySelector('.sev')).backgroundColor, style(crash).backgroundColor, \
                   style(row).backgroundColor, style(row.querySelector('.status')).color];",
                row("crasher")
            ),
            vec![],
        )
        .await;
    let transparent = "rgba(0, 0, 0, 0)";
    assert_eq!(
        styles,
        json!([
            true,
            "critical",
            "rgb(127, 13, 13)",
            "rgb(247, 201, 196)",
            transparent,
            transparent,
            "rgb(247, 201, 196)",
            "rgb(127, 13, 13)"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_named_like_markup_renders_as_text() {
    let (stack, browser) = Stack::start_with_page().await;
    browser
        .wait_until(
            "the process named like markup",
            PATIENCE,
            &format!("return !!{};", row(MARKUP_NAME)),
        )
        .await;
    let checks = browser
        .run(
            "return [document.querySelectorAll('img').length, window.__xss === undefined, \
             [...document.querySelectorAll('#events li')].some(li => li.textContent.includes('<img src=x'))];",
            vec![],
        )
        .await;
    assert_eq!(checks, json!([0, true, true]));
    assert_eq!(row_cells(&browser, MARKUP_NAME).await[0], MARKUP_NAME);
    browser.screenshot("markup-name").await;
    browser.close().await;
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_both_views_and_the_url_restores_them() {
    let (stack, browser) = Stack::start_with_page().await;
    wait_for_all_processes(&browser).await;
    // Typed as a person would: keystrokes into the process filter, a choice of type.
    let process = browser
        .client
        .find(fantoccini::Locator::Id("f-process"))
        .await
        .unwrap();
    process.send_keys("web").await.unwrap();
    browser
        .client
        .find(fantoccini::Locator::Id("f-type"))
        .await
        .unwrap()
        .select_by_value("started")
        .await
        .unwrap();
    browser
        .wait_until(
            "only web, and only its start",
            PATIENCE,
            "return document.querySelectorAll('#process-groups tr[data-key]').length === 1 \
             && document.querySelectorAll('#events li').length === 1;",
        )
        .await;
    let check_filtered = async || {
        assert_eq!(listed(&browser).await, ["web"]);
        let items = timeline(&browser).await;
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].1, "started");
        assert!(items[0].2.contains("default/web started"), "{items:?}");
    };
    check_filtered().await;
    let url = browser.client.current_url().await.unwrap().to_string();
    assert!(url.ends_with("/?process=web&type=started"), "{url}");
    browser.screenshot("filtered").await;

    // The same URL in a new page shows the same view, its inputs filled in.
    browser.client.goto("about:blank").await.unwrap();
    open(&browser, &url).await;
    browser
        .wait_until(
            "only web again",
            PATIENCE,
            "return document.querySelectorAll('#process-groups tr[data-key]').length === 1;",
        )
        .await;
    check_filtered().await;
    let inputs = browser
        .run(
            "return [document.getElementById('f-process').value, document.getElementById('f-type').value];",
            vec![],
        )
        .await;
    assert_eq!(inputs, json!(["web", "started"]));

    // Free text and severity: errors mentioning "crash" are the crasher's crash alone.
    stack.crash();
    open(
        &browser,
        &format!("{}?severity=error&q=exit%3D3", stack.url),
    )
    .await;
    browser
        .wait_until(
            "the crash alone",
            PATIENCE,
            "return document.querySelectorAll('#events li').length === 1;",
        )
        .await;
    assert_eq!(listed(&browser).await, ["crasher"]);
    assert!(
        timeline(&browser).await[0]
            .2
            .contains("jobs/crasher crashed (exit=3)")
    );
    browser.close().await;
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_shows_the_banner_then_the_outages_events_in_order_and_once() {
    let (mut stack, browser) = Stack::start_with_page().await;
    wait_for_all_processes(&browser).await;
    let before = timeline(&browser).await.len();
    assert_eq!(
        browser
            .run(
                "return document.getElementById('banner-nats').hidden;",
                vec![]
            )
            .await,
        Value::Bool(true)
    );

    stack.nats.stop();
    wait_for_banner(&browser, "banner-nats").await;
    browser.screenshot("nats-lost").await;
    // While NATS is away: a crash and a restart, kept in the daemon's outbox.
    stack.crash();
    stack
        .compose
        .wait_for_status("crasher", "Completed", PATIENCE)
        .await;
    stack.compose.restart_process("web").await;
    stack
        .compose
        .wait_for_field("web", "status", "Running", PATIENCE)
        .await;

    stack.nats.restart();
    browser
        .wait_until(
            "the banner gone and the outage's events",
            Duration::from_secs(40),
            "return document.getElementById('banner-nats').hidden && \
             [...document.querySelectorAll('#events li')].some(li => li.textContent.includes('jobs/crasher crashed')) && \
             [...document.querySelectorAll('#events li')].some(li => li.textContent.includes('default/web restarted'));",
        )
        .await;
    browser.screenshot("nats-back").await;

    let mut log = EventLog::open(&stack.nats.url()).await;
    assert!(timeline(&browser).await.len() > before);
    assert_the_timeline_is_the_stream(&browser, &mut log).await;
    browser.close().await;
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_without_a_token_it_refuses_to_start_with_78() {
    let (code, _, stderr) = Binary::output(
        &[
            "dashboard",
            "--listen",
            "0.0.0.0:9480",
            "--nats-url",
            "nats://127.0.0.1:1",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("dashboard.listen (from --listen): not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("dashboard.token_file"), "{stderr}");
    // The same from the environment names the variable.
    let (code, _, stderr) = Binary::output(
        &["dashboard", "--nats-url", "nats://127.0.0.1:1"],
        &[("PC_EVENTD_DASHBOARD__LISTEN", "[::]:9480")],
    )
    .await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("PC_EVENTD_DASHBOARD__LISTEN"), "{stderr}");
    // An unreadable token file is a configuration error too, naming its key.
    let (code, _, stderr) = Binary::output(
        &[
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--nats-url",
            "nats://127.0.0.1:1",
        ],
        &[("PC_EVENTD_DASHBOARD__TOKEN_FILE", "/nonexistent/token")],
    )
    .await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("dashboard.token_file: cannot read /nonexistent/token"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_resumes_after_losing_the_server_with_nothing_missed_or_twice() {
    let (mut stack, browser) = Stack::start_with_page().await;
    wait_for_all_processes(&browser).await;
    browser.run("window.__sameLoad = true;", vec![]).await;

    // The dashboard goes away; the page says so and keeps trying.
    let listen = stack
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    stack.dashboard.terminate().await;
    wait_for_banner(&browser, "banner-server").await;
    browser.screenshot("server-lost").await;
    // Meanwhile a crash and a restart reach the stream.
    let mut log = EventLog::open(&stack.nats.url()).await;
    stack.crash();
    log.wait_for("crasher", EventType::Crashed).await;
    stack.compose.restart_process("web").await;
    log.wait_for("web", EventType::Restarted).await;

    // Back on the same address: the page resumes from its last event id, without a reload.
    // With a backlog of one event, a page that started afresh would miss most of the outage.
    let backlog = [("PC_EVENTD_DASHBOARD__BACKLOG", "1")];
    let (dashboard, _) = start_dashboard_at(&stack.nats.url(), &listen, &backlog).await;
    stack.dashboard = dashboard;
    browser
        .wait_until(
            "the banner gone and the events of the outage",
            Duration::from_secs(40),
            "return document.getElementById('banner-server').hidden && \
             [...document.querySelectorAll('#events li')].some(li => li.textContent.includes('default/web restarted'));",
        )
        .await;
    assert_eq!(
        browser
            .run("return window.__sameLoad === true;", vec![])
            .await,
        Value::Bool(true)
    );
    assert_the_timeline_is_the_stream(&browser, &mut log).await;
    browser.close().await;
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediation_outcomes_and_loss_markers_are_in_the_timeline() {
    let (stack, browser) = Stack::start_with_page().await;
    // A remediator's outcome, on its own stream, as `pc-eventd remediate` publishes it.
    let remediation = NatsConfig {
        url: stack.nats.url(),
        subject_prefix: pc_eventd_events::remediation::DEFAULT_SUBJECT_PREFIX.into(),
        stream: StreamConfig {
            name: pc_eventd_events::remediation::DEFAULT_STREAM.into(),
            ..StreamConfig::default()
        },
        ..NatsConfig::default()
    };
    let publisher = Publisher::connect(&remediation, |_| {}).await.unwrap();
    publisher.ensure_stream(&remediation.stream).await.unwrap();
    let mut trigger = example_event();
    trigger.process = "crasher".into();
    trigger.namespace = "jobs".into();
    let outcome =
        RemediationEvent::new(&remediation.subjects(), &trigger, Action::Restarted, false);
    let batch = publisher.publish_batch(&[&Message::of(&outcome)], 1).await;
    assert!(batch.error.is_none(), "{:?}", batch.error);
    // A loss marker, on the lifecycle stream, as a daemon with a full outbox publishes it.
    let lifecycle = NatsConfig {
        url: stack.nats.url(),
        ..NatsConfig::default()
    };
    let publisher = Publisher::connect(&lifecycle, |_| {}).await.unwrap();
    let now = std::time::SystemTime::now();
    let marker = EventsLost::new(&lifecycle.subjects(), "test", 412, now, now);
    let batch = publisher.publish_batch(&[&Message::of(&marker)], 1).await;
    assert!(batch.error.is_none(), "{:?}", batch.error);

    browser
        .wait_until(
            "the outcome and the marker",
            PATIENCE,
            "return document.querySelector('#events li.remediation') !== null && \
             document.querySelector('#events li.lost') !== null;",
        )
        .await;
    let rows = browser
        .run(
            "return ['remediation', 'lost'].map(k => document.querySelector('#events li.' + k)).map(li => [li.dataset.type, li.textContent]);",
            vec![],
        )
        .await;
    assert_eq!(rows[0][0], "remediation");
    assert!(
        rows[0][1]
            .as_str()
            .unwrap()
            .contains("jobs/crasher remediation: restarted"),
        "{rows}"
    );
    assert_eq!(rows[1][0], "events_lost");
    assert!(
        rows[1][1]
            .as_str()
            .unwrap()
            .contains("412 events of test were lost"),
        "{rows}"
    );
    // The type filter finds them.
    open(&browser, &format!("{}?type=remediation", stack.url)).await;
    browser
        .wait_until(
            "the outcome alone",
            PATIENCE,
            "return document.querySelectorAll('#events li').length === 1 && \
             document.querySelector('#events li.remediation') !== null;",
        )
        .await;
    browser.screenshot("remediation").await;
    browser.close().await;
    drop(stack);
}

/// An event of `ns/name` of the stack's source, as the daemon would publish it while the
/// process runs, with a fresh id.
fn condition_event(
    ns: &str,
    name: &str,
    event_type: EventType,
    resource: Option<Resource>,
) -> LifecycleEvent {
    let mut event = example_event();
    event.id = format!("test-{}", unique_id());
    event.event_type = event_type;
    event.severity = event_type.severity();
    (event.namespace, event.process) = (ns.into(), name.into());
    event.source = "test".into();
    event.subject = SubjectScheme::default().subject(&event.source, ns, name, event_type);
    event.timestamp = timestamp(std::time::SystemTime::now());
    (event.previous_status, event.exit_code, event.restarts) = (None, None, None);
    (event.restarts_delta, event.reason) = (None, None);
    // Above the threshold, or back under it.
    let high = event_type == EventType::ResourcePressure;
    event.pressure = resource.map(|resource| {
        let (threshold, value) = match resource {
            Resource::Memory => (512.0 * MIB, if high { 600.0 * MIB } else { 100.0 * MIB }),
            Resource::Cpu => (90.0, if high { 95.0 } else { 5.0 }),
        };
        Pressure {
            resource,
            value,
            threshold,
            for_seconds: 5,
        }
    });
    event.silence =
        matches!(event_type, EventType::Silent | EventType::OutputResumed).then(|| Silence {
            threshold_seconds: 60,
            last_output: None,
            silent_seconds: (event_type == EventType::OutputResumed).then_some(75),
        });
    (event.state.name, event.state.namespace) = (name.into(), ns.into());
    event.state.namespaces = vec![ns.into()];
    event
}

const MIB: f64 = 1024.0 * 1024.0;

/// An id no other test message has.
fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{at}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The badges of process `name`'s row, as (class, text, title).
async fn badges(browser: &Browser, name: &str) -> Vec<(String, String, String)> {
    let script = format!(
        "const r = {}; return r ? [...r.querySelectorAll('.badge')].map(b => [b.className, b.textContent, b.title]) : null;",
        row(name)
    );
    serde_json::from_value(browser.run(&script, vec![]).await).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_silence_and_missing_crash_output_show_on_the_page() {
    let stack = Stack::start().await;
    let lifecycle = NatsConfig {
        url: stack.nats.url(),
        ..NatsConfig::default()
    };
    let publisher = Publisher::connect(&lifecycle, |_| {}).await.unwrap();
    let publish = async |events: &[LifecycleEvent]| {
        let messages: Vec<Message> = events.iter().map(Message::of).collect();
        let refs: Vec<&Message> = messages.iter().collect();
        let batch = publisher.publish_batch(&refs, 1).await;
        assert!(batch.error.is_none(), "{:?}", batch.error);
    };
    use EventType::{OutputResumed, ResourcePressure, ResourceRecovered, Silent};
    let (memory, cpu) = (Some(Resource::Memory), Some(Resource::Cpu));
    // web: memory, then CPU pressure; CPU recovers. The newest event of each type is about
    // CPU, so only the stream's pressure episodes tell that memory is still high.
    publish(&[
        condition_event("default", "web", ResourcePressure, memory),
        condition_event("default", "web", ResourcePressure, cpu),
        condition_event("default", "web", ResourceRecovered, cpu),
        condition_event("infra", "nats", Silent, None),
    ])
    .await;
    // A backlog of one event: the page knows the rest from the snapshot alone.
    let backlog = [("PC_EVENTD_DASHBOARD__BACKLOG", "1")];
    let (_dashboard, url) = start_dashboard_at(&stack.nats.url(), "127.0.0.1:0", &backlog).await;
    let browser = Browser::start().await;
    open(&browser, &url).await;
    wait_for_all_processes(&browser).await;
    browser
        .wait_until(
            "the markers",
            PATIENCE,
            &format!(
                "return !!{}.querySelector('.badge') && !!{}.querySelector('.badge');",
                row("web"),
                row("nats")
            ),
        )
        .await;
    assert_eq!(
        badges(&browser, "web").await,
        [(
            "badge badge-warn pressure".to_owned(),
            "memory pressure".to_owned(),
            "default/web resource_pressure (memory 600 MiB > 512 MiB for 5s)".to_owned()
        )]
    );
    assert_eq!(
        badges(&browser, "nats").await,
        [(
            "badge badge-warn silent".to_owned(),
            "silent".to_owned(),
            "infra/nats silent (no output for 60s)".to_owned()
        )]
    );
    let classes = browser
        .run(
            &format!(
                "return [{}.className, {}.className, {}.className];",
                row("web"),
                row("nats"),
                row(MARKUP_NAME)
            ),
            vec![],
        )
        .await;
    assert_eq!(classes, json!(["st-warn", "st-warn", "st-ok"]));
    // The severity filter goes by the condition: warning and up is these two.
    browser
        .client
        .find(fantoccini::Locator::Id("f-severity"))
        .await
        .unwrap()
        .select_by_value("warning")
        .await
        .unwrap();
    browser
        .wait_until(
            "the two with a condition",
            PATIENCE,
            "return document.querySelectorAll('#process-groups tr[data-key]').length === 2;",
        )
        .await;
    let mut names = listed(&browser).await;
    names.sort();
    assert_eq!(names, ["nats", "web"]);
    browser.screenshot("conditions").await;

    // Memory recovers and nats prints again: the markers go, live.
    publish(&[
        condition_event("default", "web", ResourceRecovered, memory),
        condition_event("infra", "nats", OutputResumed, None),
    ])
    .await;
    browser
        .wait_until(
            "no markers and no process at warning",
            PATIENCE,
            "return document.querySelectorAll('#process-groups .badge').length === 0 \
             && document.querySelectorAll('#process-groups tr[data-key]').length === 0;",
        )
        .await;

    // A crash whose output could not be read says why; one whose older output was cut says
    // so, with a leading "…".
    let crashed = |output: ProcessOutput| {
        let mut event = condition_event("jobs", "crasher", EventType::Crashed, None);
        event.exit_code = Some(1);
        event.output = Some(output);
        event
    };
    publish(&[
        crashed(ProcessOutput {
            unavailable: Some("the output was not read within 500ms".into()),
            ..ProcessOutput::default()
        }),
        crashed(ProcessOutput {
            lines: vec!["line 19".into(), "line 20".into()],
            truncated: true,
            ..ProcessOutput::default()
        }),
    ])
    .await;
    browser
        .wait_until(
            "the two crashes",
            PATIENCE,
            "return document.querySelectorAll('#events li[data-type=crashed]').length === 2;",
        )
        .await;
    let shown = browser
        .run(
            "const [cut, none] = document.querySelectorAll('#events li[data-type=crashed]'); \
             return [none.querySelector('.output').textContent, \
               cut.querySelector('.output summary').textContent, cut.querySelector('.output pre').textContent];",
            vec![],
        )
        .await;
    assert_eq!(
        shown,
        json!([
            "output unavailable: the output was not read within 500ms",
            "line 202 lines · older output left out",
            "…\nline 19\nline 20"
        ])
    );
    browser.close().await;
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_quiet_for_longer_than_the_streams_retention_are_listed() {
    let nats = NatsServer::start();
    let compose = ProcessCompose::start(PROJECT).await;
    // The stream keeps events for 3 s only: the page must find the processes elsewhere.
    let mut config = daemon::config(&compose.url(), &nats.url());
    config.nats.stream.max_age = Duration::from_secs(3);
    config.nats.stream.duplicate_window = Duration::from_secs(1);
    let _daemon = Daemon::spawn(config);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stored = async || match js.get_stream("PROCESS_EVENTS").await {
        Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
        Err(_) => 0,
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while stored().await < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon published nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait out the retention: the stream is empty, the processes still run.
    let deadline = std::time::Instant::now() + PATIENCE;
    while stored().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the events never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_dashboard, url) = start_dashboard(&nats.url()).await;
    let browser = Browser::start().await;
    open(&browser, &url).await;
    browser
        .wait_until(
            "all four processes from the daemon's state",
            PATIENCE,
            "return document.querySelectorAll('#process-groups tr[data-key]').length === 4;",
        )
        .await;
    let web = row_cells(&browser, "web").await;
    assert_eq!(web[1], "Running", "{web:?}");
    assert!(
        timeline(&browser).await.is_empty(),
        "the stream held nothing"
    );
    browser.screenshot("kept-state").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_path_asks_for_it_until_the_browser_has_it() {
    use crate::support::http_get_with;
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("dashboard.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let port = crate::support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let token_setting = token_file.display().to_string();
    let env = [("PC_EVENTD_DASHBOARD__TOKEN_FILE", token_setting.as_str())];
    let (_dashboard, _) = start_dashboard_at(&nats.url(), &listen, &env).await;

    for path in ["/", "/app.js", "/api/history?source=s&process=a/b"] {
        let (status, head, body) = http_get_with(port, path, &[]).await.unwrap();
        assert_eq!(status, 401, "{path}: {head}");
        assert!(body.contains("name=\"token\""), "the sign-in form: {body}");
        assert!(
            head.to_lowercase().contains("content-security-policy"),
            "{head}"
        );
    }
    let (status, _, _) = http_get_with(port, "/?token=wrong", &[]).await.unwrap();
    assert_eq!(status, 401);
    // The right token once: a cookie, and the page without the token in its URL.
    let (status, head, _) = http_get_with(port, "/?token=s3cret-token", &[])
        .await
        .unwrap();
    assert_eq!(status, 303, "{head}");
    let head = head.to_lowercase();
    assert!(head.contains("location: /\r\n"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .to_owned();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (status, _, body) = http_get_with(port, "/", &[("Cookie", &pair)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<script src=\"/app.js\""), "{body}");
    // Scripts may send it as a bearer token.
    let bearer = [("Authorization", "Bearer s3cret-token")];
    let (status, _, _) = http_get_with(port, "/app.css", &bearer).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_without_nats_it_serves_the_page_and_says_so_until_nats_comes() {
    let mut nats = NatsServer::start();
    nats.stop();
    let compose = ProcessCompose::start(PROJECT).await;
    let _daemon = Daemon::spawn(daemon::config(&compose.url(), &nats.url()));
    let (_dashboard, url) = start_dashboard(&nats.url()).await;
    let browser = Browser::start().await;
    browser.client.goto(&url).await.unwrap();
    wait_for_banner(&browser, "banner-nats").await;
    browser.screenshot("no-nats").await;
    nats.restart();
    browser
        .wait_until(
            "the banner gone and the processes",
            Duration::from_secs(40),
            "return document.getElementById('banner-nats').hidden && \
             document.querySelectorAll('#process-groups tr[data-key]').length === 4;",
        )
        .await;
    browser.close().await;
}

/// Waits until the page's process groups are titled `titles` (`source namespace`), in order.
async fn wait_for_groups(browser: &Browser, titles: &[&str]) {
    let script = format!(
        "return JSON.stringify([...document.querySelectorAll('#process-groups h3')].map(h => h.textContent)) === {};",
        json!(json!(titles).to_string())
    );
    browser
        .wait_until(&titles.join(", "), PATIENCE, &script)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleets_page_groups_by_source_and_one_hosts_page_shows_that_host_alone() {
    let mut hosts = crate::sources::TwoHosts::start(SubjectLayout::BySource).await;
    let nats = hosts.nats.url();
    let layout = ("PC_EVENTD_NATS__SUBJECT_LAYOUT", "by_source");
    let (_fleet, fleet_url) = start_dashboard_at(&nats, "127.0.0.1:0", &[layout]).await;
    let one_host = [layout, ("PC_EVENTD_DASHBOARD__SOURCE", "web-02")];
    let (_host, host_url) = start_dashboard_at(&nats, "127.0.0.1:0", &one_host).await;
    let browser = Browser::start().await;

    open(&browser, &fleet_url).await;
    wait_for_groups(&browser, &["web-01 default", "web-02 default"]).await;

    open(&browser, &host_url).await;
    wait_for_groups(&browser, &["web-02 default"]).await;
    hosts.log.read_to_end().await;
    let mut web_02 = hosts.ids_of("web-02");
    web_02.reverse();
    assert_eq!(
        timeline_ids(&browser).await,
        web_02,
        "the timeline is web-02's events, newest first"
    );
    browser.close().await;
}
