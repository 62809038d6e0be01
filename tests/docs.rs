//! The documentation's examples work: every `pc-eventd …` command in a shell block of README.md
//! and docs/*.md parses with the daemon's own command line, every TOML block passes
//! `pc-eventd config check`, and every relative link leads to a file (and to a heading, for an
//! `#anchor` into Markdown).
//!
//! A block that cannot pass on its own (a configuration naming certificate files that exist only
//! on a configured host) is marked on the line before its fence with `<!-- no-check: why -->`.
//! Such a command is skipped; such a configuration is still deserialized, so that a misspelt key
//! in it fails all the same. Each check fails if it found nothing to check, so that it cannot
//! pass by reading the wrong files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use clap::error::ErrorKind;
use pc_eventd::Cli;

const NO_CHECK: &str = "<!-- no-check:";
const SHELL_LANGUAGES: [&str; 4] = ["sh", "bash", "shell", "console"];

/// One Markdown file of the documentation.
struct Doc {
    /// Relative to the repository, for messages.
    name: String,
    path: PathBuf,
    lines: Vec<String>,
}

/// One fenced code block.
struct Block {
    /// The first word of the fence's info string (`toml`, `sh`), lowercased; `cargo.toml` for
    /// a block marked ```` ```toml Cargo.toml ````.
    language: String,
    /// 1-based line number of the block's first line of content.
    first_line: usize,
    lines: Vec<String>,
    /// The reason given by a `<!-- no-check: … -->` marker on the line before the fence.
    no_check: Option<String>,
}

/// README.md and every docs/*.md, in a stable order.
fn docs() -> Vec<Doc> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ can be read")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    paths.extend(pages);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            Doc {
                name: path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                lines: text.lines().map(str::to_owned).collect(),
                path,
            }
        })
        .collect()
}

/// The opening or closing fence of a code block: its character, its length, and what follows.
fn fence(line: &str) -> Option<(char, usize, &str)> {
    let trimmed = line.trim_start();
    // Four spaces of indentation make an indented code block, not a fence.
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let marker = trimmed.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let length = trimmed.chars().take_while(|&c| c == marker).count();
    (length >= 3).then(|| (marker, length, trimmed[length..].trim()))
}

/// Every fenced code block of `doc`, and for each line whether it lies inside one.
fn code_blocks(doc: &Doc) -> (Vec<Block>, Vec<bool>) {
    let mut blocks = Vec::new();
    let mut in_block = vec![false; doc.lines.len()];
    let mut open: Option<(char, usize, Block)> = None;
    for (index, line) in doc.lines.iter().enumerate() {
        match open.take() {
            Some((marker, length, mut block)) => {
                in_block[index] = true;
                let closes = fence(line)
                    .is_some_and(|(m, l, rest)| m == marker && l >= length && rest.is_empty());
                if closes {
                    blocks.push(block);
                } else {
                    block.lines.push(line.clone());
                    open = Some((marker, length, block));
                }
            }
            None => {
                if let Some((marker, length, info)) = fence(line) {
                    in_block[index] = true;
                    let no_check = index
                        .checked_sub(1)
                        .and_then(|before| no_check_reason(&doc.lines[before]));
                    if no_check.as_deref() == Some("") {
                        panic!("{}:{}: a no-check marker must say why", doc.name, index + 1);
                    }
                    let mut words = info.split_whitespace();
                    let language = words.next().unwrap_or("").to_ascii_lowercase();
                    // ```toml Cargo.toml: a manifest, not a pc-eventd configuration.
                    let language = match words.next() {
                        Some("Cargo.toml") => "cargo.toml".to_owned(),
                        _ => language,
                    };
                    let block = Block {
                        language,
                        first_line: index + 2,
                        lines: Vec::new(),
                        no_check,
                    };
                    open = Some((marker, length, block));
                }
            }
        }
    }
    if let Some((_, _, block)) = open {
        panic!(
            "{}:{}: a code block is never closed",
            doc.name,
            block.first_line - 1
        );
    }
    (blocks, in_block)
}

fn no_check_reason(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix(NO_CHECK)?;
    Some(rest.trim_end().trim_end_matches("-->").trim().to_owned())
}

/// The block's lines with backslash continuations joined, each with its 1-based line number.
fn logical_lines(block: &Block) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (offset, line) in block.lines.iter().enumerate() {
        let continued = pending.is_some();
        let (number, mut joined) = pending
            .take()
            .unwrap_or((block.first_line + offset, String::new()));
        // A continuation's indentation is layout, not part of the command.
        let line = if continued { line.trim_start() } else { line };
        match line.trim_end().strip_suffix('\\') {
            Some(start) => {
                joined.push_str(start);
                joined.push(' ');
                pending = Some((number, joined));
            }
            None => {
                joined.push_str(line);
                lines.push((number, joined));
            }
        }
    }
    lines.extend(pending);
    lines
}

/// Splits a command line into words as a POSIX shell would for a simple command: quotes and
/// backslashes, a comment from an unquoted `#` at the start of a word, and the end of the
/// command at the first pipe, list operator or redirection (what follows is another program
/// or a file, not arguments). No expansion: the docs' commands need none.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => break,
            '|' | '&' | ';' | '<' | '>' | '(' | ')' => {
                // `2>file`: the 2 names a file descriptor, it is no argument.
                let descriptor = matches!(c, '<' | '>') && word.chars().all(|d| d.is_ascii_digit());
                if in_word && !descriptor {
                    words.push(word);
                }
                return Ok(words);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The arguments of a `pc-eventd` invocation on `line`, if it is one: after an optional `$ `
/// prompt, `sudo` and `NAME=value` environment assignments.
fn pc_eventd_arguments(line: &str) -> Option<Result<Vec<String>, String>> {
    let line = line.trim_start();
    let line = line.strip_prefix("$ ").unwrap_or(line);
    let words = match shell_words(line) {
        Ok(words) => words,
        // Only an error if the line was meant to run pc-eventd.
        Err(err) => return line.contains("pc-eventd ").then_some(Err(err)),
    };
    let is_assignment = |word: &str| {
        word.split_once('=').is_some_and(|(name, _)| {
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let program = words
        .iter()
        .position(|word| word != "sudo" && !is_assignment(word))?;
    let name = &words[program];
    (name == "pc-eventd" || name.ends_with("/pc-eventd")).then(|| {
        let mut arguments = vec!["pc-eventd".to_owned()];
        arguments.extend_from_slice(&words[program + 1..]);
        Ok(arguments)
    })
}

#[test]
fn every_documented_command_parses() {
    let mut checked = 0;
    let mut skipped_blocks = 0;
    let mut failures = Vec::new();
    for doc in docs() {
        let (blocks, _) = code_blocks(&doc);
        for block in blocks {
            if !SHELL_LANGUAGES.contains(&block.language.as_str()) {
                continue;
            }
            if block.no_check.is_some() {
                skipped_blocks += 1;
                continue;
            }
            for (number, line) in logical_lines(&block) {
                let words = match pc_eventd_arguments(&line) {
                    None => continue,
                    Some(Ok(words)) => words,
                    Some(Err(err)) => {
                        failures.push(format!("{}:{number}: {line}\n  {err}", doc.name));
                        continue;
                    }
                };
                checked += 1;
                if let Err(err) = Cli::try_parse_from(&words) {
                    // --help and --version "fail" only to print and exit 0.
                    if !matches!(
                        err.kind(),
                        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                    ) {
                        failures.push(format!("{}:{number}: {}\n{err}", doc.name, line.trim()));
                    }
                }
            }
        }
    }
    println!("{checked} pc-eventd commands parsed, {skipped_blocks} no-check shell blocks skipped");
    assert!(
        failures.is_empty(),
        "documented commands the CLI refuses:\n\n{}",
        failures.join("\n\n")
    );
    assert!(checked > 0, "no pc-eventd command found in the docs");
}

#[test]
fn every_documented_configuration_passes_config_check() {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let mut checked = 0;
    let mut skipped = 0;
    let mut failures = Vec::new();
    for doc in docs() {
        let (blocks, _) = code_blocks(&doc);
        for block in blocks.iter().filter(|block| block.language == "toml") {
            let location = format!("{}:{}", doc.name, block.first_line);
            let text = block.lines.join("\n") + "\n";
            if block.no_check.is_some() {
                // The files it names may be missing here, but its keys and values must be right.
                skipped += 1;
                if let Err(err) = toml::from_str::<pc_eventd::Config>(&text) {
                    failures.push(format!("{location} (no-check): not a configuration: {err}"));
                }
                continue;
            }
            checked += 1;
            let file = scratch.path().join(format!("block-{checked}.toml"));
            std::fs::write(&file, &text).expect("the block is written");
            let mut check = Command::new(env!("CARGO_BIN_EXE_pc-eventd"));
            check.args(["config", "check", "--config"]).arg(&file);
            // The block alone is the configuration: nothing from the environment it runs in.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("PC_EVENTD_") {
                    check.env_remove(name);
                }
            }
            // daemon.state_dir must resolve; do not depend on the machine's HOME for that.
            check.env("XDG_STATE_HOME", scratch.path());
            let output = check.output().expect("pc-eventd runs");
            if !output.status.success() {
                failures.push(format!(
                    "{location}: `pc-eventd config check` exited with {}:\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
    }
    println!(
        "{checked} configuration blocks passed config check, {skipped} no-check blocks only parsed"
    );
    assert!(
        failures.is_empty(),
        "documented configurations that fail:\n\n{}",
        failures.join("\n\n")
    );
    assert!(checked > 0, "no TOML configuration found in the docs");
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The anchors of every heading outside code blocks, with `-1`, `-2` … for repeats.
fn anchors(doc: &Doc) -> Vec<String> {
    let (_, in_block) = code_blocks(doc);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    doc.lines
        .iter()
        .zip(in_block)
        .filter(|(_, in_block)| !in_block)
        .filter_map(|(line, _)| {
            let text = line.trim_start_matches('#');
            (line.starts_with('#') && text.starts_with(' ')).then(|| anchor(text))
        })
        .map(|base| {
            let repeats = seen.entry(base.clone()).or_default();
            let unique = match *repeats {
                0 => base,
                n => format!("{base}-{n}"),
            };
            *repeats += 1;
            unique
        })
        .collect()
}

/// The targets of the inline links on `line` (`[text](target)`), outside code spans.
fn link_targets(line: &str) -> Vec<String> {
    // Code spans may hold `](` that is no link.
    let prose: String = line
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 0 { part } else { "" })
        .collect();
    let mut targets = Vec::new();
    let mut rest = prose.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    targets
}

#[test]
fn every_relative_link_resolves() {
    let docs = docs();
    let anchors_by_path: BTreeMap<PathBuf, Vec<String>> = docs
        .iter()
        .map(|doc| (doc.path.clone(), anchors(doc)))
        .collect();
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in &docs {
        let (_, in_block) = code_blocks(doc);
        for (index, line) in doc.lines.iter().enumerate() {
            if in_block[index] {
                continue;
            }
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, fragment) = match target.split_once('#') {
                    Some((file, fragment)) => (file, Some(fragment)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    doc.path.clone()
                } else {
                    doc.path.parent().expect("a doc's folder").join(file)
                };
                let Ok(path) = path.canonicalize() else {
                    failures.push(format!(
                        "{}:{}: {target}: no such file",
                        doc.name,
                        index + 1
                    ));
                    continue;
                };
                let Some(fragment) = fragment else { continue };
                let anchors = anchors_by_path.get(&path).cloned().or_else(|| {
                    // A Markdown file outside README.md and docs/.
                    let text = std::fs::read_to_string(&path).ok()?;
                    let doc = Doc {
                        name: target.clone(),
                        path: path.clone(),
                        lines: text.lines().map(str::to_owned).collect(),
                    };
                    Some(anchors(&doc))
                });
                if !anchors.is_some_and(|anchors| anchors.iter().any(|a| a == fragment)) {
                    failures.push(format!(
                        "{}:{}: {target}: no heading with that anchor",
                        doc.name,
                        index + 1
                    ));
                }
            }
        }
    }
    println!("{checked} relative links resolved");
    assert!(
        failures.is_empty(),
        "broken links:\n{}",
        failures.join("\n")
    );
    assert!(checked > 0, "no relative link found in the docs");
}

#[test]
fn shell_words_split_like_a_shell() {
    let words = |line: &str| shell_words(line).unwrap();
    assert_eq!(
        words(r#"pc-eventd watch --process 'my job' --json | jq ."#),
        ["pc-eventd", "watch", "--process", "my job", "--json"]
    );
    assert_eq!(
        words(r#"pc-eventd run --config "/etc/a b.toml" # a comment"#),
        ["pc-eventd", "run", "--config", "/etc/a b.toml"]
    );
    assert_eq!(
        words("pc-eventd completions bash > /etc/bash_completion.d/pc-eventd"),
        ["pc-eventd", "completions", "bash"]
    );
    assert_eq!(words("pc-eventd watch 2>/dev/null"), ["pc-eventd", "watch"]);
    assert_eq!(words(r"a\ b c#d"), ["a b", "c#d"]);
    assert!(shell_words("pc-eventd 'open").is_err());
    assert_eq!(
        pc_eventd_arguments("$ FOO=1 sudo pc-eventd config check"),
        Some(Ok(vec![
            "pc-eventd".into(),
            "config".into(),
            "check".into()
        ]))
    );
    assert_eq!(
        pc_eventd_arguments("scripts/demo.sh  # runs pc-eventd run"),
        None
    );
    assert_eq!(
        pc_eventd_arguments("pc-eventd: invalid configuration:"),
        None
    );
}
