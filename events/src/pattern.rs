//! Selecting processes by name: `web`, `api-*`, `backend/*`; the one glob of configurations
//! that apply to some processes only.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::split_process;

/// A glob over a process, `NAME` or `NAMESPACE/NAME` (see [`split_process`]): `*` matches any
/// run of characters, `?` one character; everything else matches itself. Without a namespace
/// part it matches the name in every namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct ProcessPattern {
    namespace: Option<String>,
    name: String,
}

impl ProcessPattern {
    /// The pattern as written.
    pub fn new(pattern: &str) -> Self {
        let (namespace, name) = split_process(pattern);
        Self {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// A pattern that selects every process.
    pub fn any() -> Self {
        Self::new("*")
    }

    /// Whether the process `name` in `namespace` is selected.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| glob_matches(ns, namespace))
            && glob_matches(&self.name, name)
    }
}

impl From<String> for ProcessPattern {
    fn from(pattern: String) -> Self {
        Self::new(&pattern)
    }
}

impl From<&str> for ProcessPattern {
    fn from(pattern: &str) -> Self {
        Self::new(pattern)
    }
}

impl From<ProcessPattern> for String {
    fn from(pattern: ProcessPattern) -> Self {
        pattern.to_string()
    }
}

impl fmt::Display for ProcessPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Whether any of `patterns` selects the process.
pub fn any_matches(patterns: &[ProcessPattern], namespace: &str, name: &str) -> bool {
    patterns.iter().any(|p| p.matches(namespace, name))
}

/// `*` and `?` globbing, iterative with one backtrack point (linear in practice, never
/// exponential).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        for (pattern, name, expected) in [
            ("web", "web", true),
            ("web", "web-0", false),
            ("web*", "web-0", true),
            ("web*", "web", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("w?b", "web", true),
            ("w?b", "wb", false),
            ("*-worker", "mail-worker", true),
            ("*-worker", "mail-worker-2", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**", "x", true),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn a_namespace_part_pins_the_namespace() {
        let p = ProcessPattern::new("backend/api-*");
        assert!(p.matches("backend", "api-1"));
        assert!(!p.matches("frontend", "api-1"));
        let any_ns = ProcessPattern::new("api-*");
        assert!(any_ns.matches("frontend", "api-1"));
        assert!(ProcessPattern::new("b*/x").matches("backend", "x"));
        assert!(ProcessPattern::any().matches("ns", "anything"));
        assert!(any_matches(&[p.clone(), any_ns], "x", "api-2"));
        assert!(!any_matches(&[p], "x", "api-2"));
        assert!(!any_matches(&[], "x", "api-2"));
    }

    #[test]
    fn patterns_read_and_write_as_text() {
        let p: ProcessPattern = serde_json::from_str("\"backend/api-*\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"backend/api-*\"");
        assert_eq!(ProcessPattern::new("web").to_string(), "web");
    }
}
