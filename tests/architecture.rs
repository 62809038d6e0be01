//! docs/architecture.md is true of the tree: every file is on the map and every file on the map
//! exists, the imports between the daemon's folders follow its table of who may import whom, no
//! file imports a file that imports it, and the event contract does not depend on
//! process-compose's model.
//!
//! Imports are read from the source text (`use crate::…`, `use super::…`, a sibling module's
//! name), as a reader would: enough for this code base, which writes its imports that way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The daemon's top-level parts, each a folder or a file of `src/`, and what each may import.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("source", &["units"]),
    ("diff", &["units"]),
    ("delivery", &["diff", "ops", "sync"]),
    ("ops", &["source", "sync", "http"]),
    ("commands", &["http"]),
    ("config", &["source", "diff", "ops", "commands", "units"]),
    (
        "daemon",
        &["source", "diff", "delivery", "ops", "config", "sync"],
    ),
    (
        "cli",
        &[
            "source", "diff", "delivery", "ops", "config", "daemon", "commands",
        ],
    ),
    ("sync", &[]),
    ("units", &[]),
    ("http", &[]),
];

/// The `.rs` files under `dir`, relative to it, but the unit tests kept beside their code.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// The code of `text` without comments (line comments and doc comments) and without its unit
/// tests (a `#[cfg(test)]` module at the end of the file, whose `super` is the file itself).
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `file` (relative to `root`) names: `crate::a::b` as `[a, b]`, and
/// `super::x` or a sibling module `x::` as the path of the module they point into.
fn imported_paths(root: &Path, file: &Path) -> Vec<Vec<String>> {
    let text = code(&std::fs::read_to_string(root.join(file)).unwrap());
    let module = module_of(file);
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let mut paths = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
        let mut rest = text.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            paths.push([base.clone(), segments(rest)].concat());
        }
    }
    // `use rules::…` in a folder's mod.rs: a child module.
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix("use ").or(line.strip_prefix("pub use ")) {
            let path = segments(rest);
            if let Some(first) = path.first()
                && is_module(root, &[module.clone(), vec![first.clone()]].concat())
                && file.ends_with("mod.rs")
            {
                paths.push([module.clone(), path].concat());
            }
        }
    }
    paths
}

/// The leading `a::b::c` of `text`.
fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

/// The module path of a file: `diff/rules.rs` is `[diff, rules]`, `diff/mod.rs` is `[diff]`.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn is_module(root: &Path, module: &[String]) -> bool {
    let base = root.join(module.join("/"));
    base.with_extension("rs").is_file() || base.join("mod.rs").is_file()
}

/// The file a module path points into: the longest prefix that is a module.
fn file_of(root: &Path, path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| {
        let base = path[..n].join("/");
        [format!("{base}.rs"), format!("{base}/mod.rs")]
            .into_iter()
            .map(PathBuf::from)
            .find(|candidate| root.join(candidate).is_file())
    })
}

/// Every file's imports of other files of the same crate.
fn import_graph(root: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    sources(root)
        .into_iter()
        .map(|file| {
            let targets = imported_paths(root, &file)
                .iter()
                .filter_map(|path| file_of(root, path))
                .filter(|target| *target != file)
                .collect();
            (file, targets)
        })
        .collect()
}

/// The daemon's part a file belongs to: its first folder, or its name.
fn part(file: &Path) -> String {
    module_of(file).first().cloned().unwrap_or_default()
}

#[test]
fn the_daemon_folders_import_only_what_the_map_allows() {
    let allowed: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
    let mut broken = Vec::new();
    for (file, targets) in import_graph(Path::new("src")) {
        let from = part(&file);
        let Some(may) = allowed.get(from.as_str()) else {
            // lib.rs and main.rs: the crate's front door
            assert!(
                ["lib.rs", "main.rs"].contains(&file.to_str().unwrap()),
                "{} is in no part of the map",
                file.display()
            );
            continue;
        };
        for target in targets {
            let to = part(&target);
            if to != from && !may.contains(&to.as_str()) {
                broken.push(format!(
                    "src/{} imports src/{}",
                    file.display(),
                    target.display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports the map forbids:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    for root in ["src", "events/src"] {
        let graph = import_graph(Path::new(root));
        let mut circles = Vec::new();
        for (file, targets) in &graph {
            for target in targets {
                if file < target && graph.get(target).is_some_and(|back| back.contains(file)) {
                    circles.push(format!(
                        "{root}/{} ⇄ {root}/{}",
                        file.display(),
                        target.display()
                    ));
                }
            }
        }
        assert!(
            circles.is_empty(),
            "files that import each other:\n{}",
            circles.join("\n")
        );
    }
}

#[test]
fn the_event_contract_does_not_depend_on_process_composes_model() {
    let graph = import_graph(Path::new("events/src"));
    for contract in ["event.rs", "remediation.rs"] {
        let imports = &graph[Path::new(contract)];
        assert!(
            imports
                .iter()
                .all(|file| !file.starts_with("process_compose")),
            "{contract} imports {imports:?}"
        );
    }
}

/// The rows of the map's two tables (the library's files, the daemon's paths) in
/// docs/architecture.md, by the path in their first cell.
fn map_rows() -> BTreeMap<String, String> {
    let map = std::fs::read_to_string("docs/architecture.md").unwrap();
    map.split("\n## ")
        .filter(|section| section.starts_with("The library") || section.starts_with("The daemon"))
        .flat_map(str::lines)
        .filter_map(|line| {
            let first = line.strip_prefix("| `")?;
            let end = first.find('`')?;
            Some((first[..end].to_owned(), line.to_owned()))
        })
        .collect()
}

#[test]
fn every_file_is_on_the_map_in_its_folders_row() {
    let rows = map_rows();
    let mut missing = Vec::new();
    for (root, prefix) in [("src", "src/"), ("events/src", "events/src/")] {
        for file in sources(Path::new(root)) {
            let mut parts = file.iter().map(|p| p.to_string_lossy().into_owned());
            let first = parts.next().unwrap();
            let named = match parts.next() {
                // a file of the root: its own row
                None => rows.contains_key(&first),
                // in a folder: the folder's row names it (a file, or its sub-folder); mod.rs is
                // the folder itself
                Some(second) => rows.get(&format!("{first}/")).is_some_and(|row| {
                    let name = if parts.next().is_some() {
                        format!("{second}/")
                    } else {
                        second.clone()
                    };
                    name == "mod.rs" || row.contains(&format!("`{name}`"))
                }),
            };
            if !named {
                missing.push(format!("{prefix}{}", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not on docs/architecture.md's map:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_path_on_the_map_exists() {
    let mut stale = Vec::new();
    for (first, row) in map_rows() {
        let exists = |path: &str| {
            ["src", "events/src", "events"]
                .iter()
                .any(|root| Path::new(root).join(path).exists())
        };
        if first.ends_with(".rs") || first.ends_with('/') {
            if !exists(&first) {
                stale.push(first.clone());
            }
            // the files a folder's row names, in parentheses after it
            if first.ends_with('/') {
                for name in row.split('`').skip(3).step_by(2) {
                    if (name.ends_with(".rs") || name.ends_with('/'))
                        && !name.contains(' ')
                        && !exists(&format!("{first}{name}"))
                        && !exists(name)
                    {
                        stale.push(format!("{first}{name}"));
                    }
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "on the map but not in the tree:\n{}",
        stale.join("\n")
    );
}
