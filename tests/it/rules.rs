//! The Prometheus alert rules (packaging/prometheus/pc-eventd.rules.yml): checked and unit
//! tested by the real promtool (Debian's, installed by scripts/install-peers.sh as
//! `TEST_PROMTOOL`). The cases themselves are in pc-eventd.rules.test.yml.

use std::path::PathBuf;
use std::process::Command;

use crate::support::peer_binary;

fn packaged(file: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "packaging", "prometheus", file]
        .iter()
        .collect()
}

/// Runs `promtool ARGS FILE` and asserts that it succeeds, with its output on failure.
fn promtool(args: &[&str], file: &str) {
    let path = packaged(file);
    let output = Command::new(peer_binary("TEST_PROMTOOL"))
        .args(args)
        .arg(&path)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {} {}: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn promtool_checks_the_rule_file() {
    promtool(&["check", "rules"], "pc-eventd.rules.yml");
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules"], "pc-eventd.rules.test.yml");
}
