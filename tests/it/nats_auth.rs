//! NATS authentication and TLS against a real nats-server, one per test with its own
//! configuration file (`authorization` and `tls` blocks): user/password, token, nkey, mutual TLS
//! with a CA made in the test, creds files for users of an operator and account made in the test
//! (decentralized JWT authentication), several server URLs, and secrets kept out of logs and
//! `config check`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions};
use pc_eventd::Status;
use pc_eventd_events::event::{EventType, LifecycleEvent};
use pc_eventd_events::nats::{NatsConfig, Secret};
use tokio_rustls::rustls;

use crate::support::binary::Binary;
use crate::support::compose::ProcessCompose;
use crate::support::daemon::{Daemon, config};
use crate::support::jwt::{self, Operator};
use crate::support::nats::NatsServer;
use crate::support::{eventually, free_port};

const LONG: Duration = Duration::from_secs(20);
const WEB: &str = "processes:\n  web:\n    command: \"sleep 1000\"\n";

/// The daemon with `auth` (a [`NatsConfig`] holding only authentication and TLS settings) against
/// `url`: it must create the stream and publish `web` started, read back with the same settings.
async fn events_flow(url: &str, auth: &NatsConfig) {
    let pc = ProcessCompose::start(WEB).await;
    let mut config = config(&pc.url(), url);
    config.nats = with_url(auth, url);
    let js = reader(&config.nats).await;
    let before = last_started(&js).await.map_or(0, |(sequence, _)| sequence);
    let daemon = Daemon::spawn(config.clone());
    let deadline = Instant::now() + LONG;
    // This daemon's event: stored after whatever an earlier run left in the stream.
    let started = loop {
        match last_started(&js).await {
            Some((sequence, event)) if sequence > before => break event,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "web started never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(started.process, "web");
    assert_eq!(started.event_type, EventType::Started);
    assert!(daemon.status.readiness().nats.is_ok());
    assert!(daemon.status.metrics.published_total() >= 1);
    daemon.stop().await.expect("the daemon ends cleanly");
}

/// The daemon with `auth` against `url` never connects: once it has tried to make the stream
/// and failed, NATS is still not connected, nothing is published, and no stream appears
/// (checked with the good settings `good`).
async fn daemon_is_refused(url: &str, auth: &NatsConfig, good: &NatsConfig) {
    let mut config = config("http://127.0.0.1:1", url);
    config.nats = with_url(auth, url);
    let daemon = Daemon::spawn(config);
    let untried = Status::default().readiness();
    assert!(
        eventually(LONG, || daemon.status.readiness().stream != untried.stream).await,
        "the daemon never tried to make the stream"
    );
    let readiness = daemon.status.readiness();
    assert!(readiness.stream.is_err(), "{readiness:?}");
    assert_eq!(readiness.nats, untried.nats, "it never connected");
    assert_eq!(daemon.status.metrics.published_total(), 0);
    let js = reader(&with_url(good, url)).await;
    assert!(
        js.get_stream("PROCESS_EVENTS").await.is_err(),
        "a refused daemon created the stream"
    );
    daemon.stop().await.expect("the daemon ends cleanly");
}

/// One connection attempt with `auth` against `url` (no retries); its error kind.
async fn refusal(url: &str, auth: &NatsConfig) -> ConnectErrorKind {
    refused(url, auth).await.kind()
}

/// One connection attempt with `auth` against `url` (no retries); its error.
async fn refused(url: &str, auth: &NatsConfig) -> ConnectError {
    let options = ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    match with_url(auth, url).connect(options).await {
        Ok(_) => panic!("connected to {url} with settings that must be refused"),
        Err(err) => err,
    }
}

/// Connecting with `auth` to `url` fails in the TLS handshake, as `expected` says of rustls's
/// error.
async fn refused_by_tls(url: &str, auth: &NatsConfig, expected: impl Fn(&rustls::Error) -> bool) {
    let err = refused(url, auth).await;
    assert!(tls_failure(&err).is_some_and(expected), "{err:?}");
}

/// The TLS failure behind a refused connection: async-nats reports it as an I/O error that
/// carries rustls's own.
fn tls_failure(err: &ConnectError) -> Option<&rustls::Error> {
    let io = std::error::Error::source(err)?.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

fn with_url(auth: &NatsConfig, url: &str) -> NatsConfig {
    NatsConfig {
        url: url.to_owned(),
        ack_timeout: Duration::from_secs(2),
        ..auth.clone()
    }
}

/// A JetStream client connected with `nats`'s own settings.
async fn reader(nats: &NatsConfig) -> jetstream::Context {
    let client = nats
        .connect(ConnectOptions::new())
        .await
        .expect("the test's reader connects");
    jetstream::new(client)
}

/// The stream sequence and event of the last `web` started, if there is one.
async fn last_started(js: &jetstream::Context) -> Option<(u64, LifecycleEvent)> {
    let stream = js.get_stream("PROCESS_EVENTS").await.ok()?;
    let message = stream
        .get_last_raw_message_by_subject("core.process.default.web.started")
        .await
        .ok()?;
    let event = serde_json::from_slice(&message.payload).expect("a lifecycle event");
    Some((message.sequence, event))
}

fn user_password(user: &str, password: &str) -> NatsConfig {
    NatsConfig {
        user: Some(user.into()),
        password: Some(Secret::new(password)),
        ..NatsConfig::default()
    }
}

fn token(token: &str) -> NatsConfig {
    NatsConfig {
        token: Some(Secret::new(token)),
        ..NatsConfig::default()
    }
}

fn nkey_seed(seed: &str) -> NatsConfig {
    NatsConfig {
        nkey_seed: Some(Secret::new(seed)),
        ..NatsConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_authenticate_and_a_wrong_password_is_refused() {
    let nats = NatsServer::start_with_config(
        "authorization { users = [ { user: \"pc-eventd\", password: \"right-password-4711\" } ] }\n",
    );
    let good = user_password("pc-eventd", "right-password-4711");
    let wrong = user_password("pc-eventd", "wrong-password-0815");
    // First the refusals, while the server has no stream yet.
    daemon_is_refused(&nats.url(), &wrong, &good).await;
    assert_eq!(
        refusal(&nats.url(), &wrong).await,
        ConnectErrorKind::AuthorizationViolation
    );
    assert_eq!(
        refusal(&nats.url(), &NatsConfig::default()).await,
        ConnectErrorKind::AuthorizationViolation,
        "no credentials at all"
    );
    events_flow(&nats.url(), &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authenticates_and_a_wrong_token_is_refused() {
    let nats = NatsServer::start_with_config("authorization { token: \"right-token-s3cr3t\" }\n");
    let good = token("right-token-s3cr3t");
    events_flow(&nats.url(), &good).await;
    assert_eq!(
        refusal(&nats.url(), &token("wrong-token-s3cr3t")).await,
        ConnectErrorKind::AuthorizationViolation
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seeds_authenticate_inline_and_from_a_file() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let nats = NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    ));
    events_flow(&nats.url(), &nkey_seed(&seed)).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pc-eventd.nk");
    std::fs::write(&file, format!("{seed}\n")).unwrap();
    let from_file = NatsConfig {
        nkey_seed_file: Some(file),
        ..NatsConfig::default()
    };
    let client = with_url(&from_file, &nats.url())
        .connect(ConnectOptions::new())
        .await
        .expect("the seed file authenticates");
    client.flush().await.unwrap();

    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert_eq!(
        refusal(&nats.url(), &nkey_seed(&stranger)).await,
        ConnectErrorKind::AuthorizationViolation
    );
}

/// A CA, a server certificate for 127.0.0.1 (IP SAN) and a client certificate, made with the
/// `openssl` command; PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn generate(dir: &Path) -> Self {
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the TLS tests need the openssl command (Debian: apt install openssl)");
            assert!(
                output.status.success(),
                "openssl {args:?} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        // EC P-256 keys without a passphrase; certificates valid for two days.
        let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let words = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };

        let mut ca = words(&format!(
            "req -x509 -days 2 {new_key} -keyout ca.key -out ca.pem"
        ));
        ca.extend(words("-subj /CN=pc-eventd-test-CA"));
        ca.extend(words("-addext basicConstraints=critical,CA:TRUE"));
        ca.extend(words("-addext keyUsage=critical,keyCertSign,cRLSign"));
        openssl(&ca.iter().map(String::as_str).collect::<Vec<_>>());

        for (name, serial, extensions) in [
            (
                "server",
                2,
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", 3, "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
            let request = words(&format!(
                "req {new_key} -keyout {name}.key -out {name}.csr -subj /CN={name}"
            ));
            openssl(&request.iter().map(String::as_str).collect::<Vec<_>>());
            let sign = words(&format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 2 \
                 -sha256 -extfile {name}.ext -out {name}.pem"
            ));
            openssl(&sign.iter().map(String::as_str).collect::<Vec<_>>());
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_custom_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let nats = NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 5\n}}\n",
        pki.server_cert, pki.server_key, pki.ca
    ));
    let mutual = NatsConfig {
        tls_ca_file: Some(pki.ca.clone()),
        tls_cert_file: Some(pki.client_cert.clone()),
        tls_key_file: Some(pki.client_key.clone()),
        ..NatsConfig::default()
    };
    // Without the client certificate the server ends the handshake: first the refusals, while
    // the server has no stream yet.
    let ca_only = NatsConfig {
        tls_ca_file: Some(pki.ca.clone()),
        ..NatsConfig::default()
    };
    refused_by_tls(&nats.url(), &ca_only, |e| {
        matches!(
            e,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
        )
    })
    .await;
    daemon_is_refused(&nats.url(), &ca_only, &mutual).await;
    // Without the CA the server's certificate is not trusted.
    let no_ca = NatsConfig {
        tls_ca_file: None,
        ..mutual.clone()
    };
    refused_by_tls(&nats.url(), &no_ca, |e| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        )
    })
    .await;

    // A tls:// URL requires TLS; the server certificate is checked against the CA and 127.0.0.1.
    let tls_url = nats.url().replace("nats://", "tls://");
    events_flow(&tls_url, &mutual).await;

    // tls_required insists on a TLS handshake, which a server without TLS cannot answer.
    let plain = NatsServer::start();
    with_url(&ca_only, &plain.url())
        .connect(ConnectOptions::new())
        .await
        .expect("without tls_required a plain server is fine");
    let required = NatsConfig {
        tls_required: true,
        ..ca_only
    };
    // (the plain server's INFO line is no TLS record)
    refused_by_tls(&plain.url(), &required, |e| {
        matches!(
            e,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_files_authenticate_over_tls_and_users_of_other_accounts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let operator = Operator::new("pc-eventd-test");
    let system = operator.system_account();
    let events = operator.account("EVENTS");
    let operator_jwt = dir.path().join("operator.jwt");
    std::fs::write(&operator_jwt, &operator.jwt).unwrap();
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 5\n}}\n",
        pki.server_cert, pki.server_key
    );
    let nats = NatsServer::start_with_config(&operator.server_config(
        &operator_jwt,
        &system,
        &[&events],
        &tls,
    ));
    let url = nats.url().replace("nats://", "tls://");
    // A creds file written to `dir`, used over TLS with the test's CA.
    let creds_file = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        NatsConfig {
            creds_file: Some(file),
            tls_ca_file: Some(pki.ca.clone()),
            ..NatsConfig::default()
        }
    };
    let good = creds_file("pc-eventd.creds", &events.user_creds("pc-eventd"));

    // First the refusals, while the server has no stream yet. A user of an account that another
    // operator signed: the server neither knows nor trusts that account.
    let foreign = Operator::new("stranger").account("EVENTS");
    let foreign = creds_file("foreign.creds", &foreign.user_creds("pc-eventd"));
    daemon_is_refused(&url, &foreign, &good).await;
    assert_eq!(
        refusal(&url, &foreign).await,
        ConnectErrorKind::AuthorizationViolation
    );
    // A user of an account of the right operator that the server was not given.
    let unknown = operator.account("UNKNOWN").user_creds("pc-eventd");
    assert_eq!(
        refusal(&url, &creds_file("unknown.creds", &unknown)).await,
        ConnectErrorKind::AuthorizationViolation
    );
    let no_creds = NatsConfig {
        creds_file: None,
        ..good.clone()
    };
    assert_eq!(
        refusal(&url, &no_creds).await,
        ConnectErrorKind::AuthorizationViolation,
        "no creds file at all"
    );
    // The right account's JWT for one user, with another user's seed: the nonce signature does
    // not match the JWT's subject.
    let user_jwt = events.user_jwt(&nkeys::KeyPair::new_user(), "pc-eventd");
    let other_seed = nkeys::KeyPair::new_user().seed().unwrap();
    let imposter = creds_file("imposter.creds", &jwt::creds(&user_jwt, &other_seed));
    assert_eq!(
        refusal(&url, &imposter).await,
        ConnectErrorKind::AuthorizationViolation
    );

    events_flow(&url, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_connect_to_the_live_one() {
    let nats = NatsServer::start_with_config("authorization { token: \"several-urls-token\" }\n");
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let urls = format!("{dead}, {}", nats.url());
    events_flow(&urls, &token("several-urls-token")).await;
    // and with the dead one last
    let urls = format!("{},{dead}", nats.url());
    events_flow(&urls, &token("several-urls-token")).await;
}

/// Runs the daemon binary with `RUST_LOG=trace` and `env` (wrong NATS credentials) against
/// `nats_url` until NATS has refused it; returns everything it logged.
async fn refused_run_logs(nats_url: &str, env: &[(&str, &str)]) -> String {
    let args = [
        "run",
        "--compose-port",
        "1",
        "--nats-url",
        nats_url,
        "--poll-interval",
        "200ms",
    ];
    let mut env = env.to_vec();
    env.extend([
        ("RUST_LOG", "trace"),
        ("PC_EVENTD_NATS__ACK_TIMEOUT", "1s"),
        (
            "PC_EVENTD_PROCESS_COMPOSE__TOKEN",
            "pc-api-token-never-logged-42",
        ),
    ]);
    let mut daemon = Binary::spawn_with_env(&args, &env);
    daemon
        .stderr_line_containing("authorization violation", LONG)
        .await;
    daemon
        .stderr_line_containing("waiting for NATS JetStream", LONG)
        .await;
    assert_eq!(daemon.terminate().await, Some(0));
    let mut all = daemon.stderr_seen.clone();
    all.extend(daemon.rest_of_stderr().await);
    let all = all.join("\n");
    assert!(
        all.contains("write operation: CONNECT"),
        "trace logging showed the CONNECT it sent"
    );
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_secrets_never_reach_the_logs() {
    let nats = NatsServer::start_with_config(
        "authorization { users = [ { user: \"pc-eventd\", password: \"right-password-9999\" } ] }\n",
    );
    let url = nats.url();
    let password = "wrong-password-never-logged-1234";
    let token = "wrong-token-never-logged-5678";
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let password_env = [
        ("PC_EVENTD_NATS__USER", "pc-eventd"),
        ("PC_EVENTD_NATS__PASSWORD", password),
    ];
    let token_env = [("PC_EVENTD_NATS__TOKEN", token)];
    let seed_env = [("PC_EVENTD_NATS__NKEY_SEED", seed.as_str())];
    let (with_password, with_token, with_seed) = tokio::join!(
        refused_run_logs(&url, &password_env),
        refused_run_logs(&url, &token_env),
        refused_run_logs(&url, &seed_env),
    );
    for (secret, logs) in [
        (password, &with_password),
        (token, &with_token),
        (&seed, &with_seed),
    ] {
        assert!(!logs.contains(secret), "a NATS secret leaked into the logs");
        assert!(
            !logs.contains("pc-api-token-never-logged"),
            "the process-compose token leaked into the logs"
        );
    }
}

#[tokio::test]
async fn config_check_redacts_nats_secrets() {
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked until connecting\n").unwrap();
    for (auth, secret) in [
        (
            "user = \"pc-eventd\"\npassword = \"config-check-password-31337\"\n".to_owned(),
            "config-check-password-31337",
        ),
        (
            "token = \"config-check-token-31337\"\n".to_owned(),
            "config-check-token-31337",
        ),
        (format!("nkey_seed = \"{seed}\"\n"), seed.as_str()),
    ] {
        let file = dir.path().join("pc-eventd.toml");
        std::fs::write(
            &file,
            format!(
                "[nats]\nurl = \"tls://10.0.0.1:4222,tls://10.0.0.2:4222\"\n{auth}tls_ca_file = {:?}\n",
                ca
            ),
        )
        .unwrap();
        let (code, stdout, stderr) = Binary::output(
            &["config", "check", "--config", file.to_str().unwrap()],
            &[],
        )
        .await;
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains("= \"<redacted>\""), "{stdout}");
        assert!(stdout.contains("tls_ca_file = "), "{stdout}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }

    // A secret of the wrong type is refused without being shown.
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[nats]\nuser = \"u\"\npassword = [\"typed-wrong-password-777\"]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = Binary::output(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code, Some(78));
    assert!(stderr.contains("nats.password"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("typed-wrong-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_connects_with_the_same_settings() {
    let nats = NatsServer::start_with_config("authorization { token: \"watch-token-2468\" }\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pc-eventd.toml");
    let write = |token: &str| {
        let text = format!("[nats]\nurl = \"{}\"\ntoken = \"{token}\"\n", nats.url());
        std::fs::write(&file, text).unwrap();
    };
    let config = file.to_str().unwrap();

    write("watch-token-2468");
    let mut watch = Binary::spawn(&["watch", "--config", config]);
    watch.stderr_line_containing("Watching events", LONG).await;
    assert_eq!(watch.terminate().await, Some(0));

    write("wrong-watch-token-1357");
    let (code, _, stderr) = Binary::output(&["watch", "--config", config], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("authorization violation"), "{stderr}");
    assert!(!stderr.contains("wrong-watch-token"), "{stderr}");
}
