//! The crate's layout holds: every module imports only from modules in a lower layer
//! (the layers `src/lib.rs` lists, from `base` up), never from one above, and no group of
//! modules imports each other in a cycle. Read from the source's `crate::` and `super::`
//! paths (comments left out), so a new upward import fails here naming the file and the
//! path, before it can grow into a tangle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["base", "testing"],
    &["tls"],
    &["api", "config", "metrics", "listener"],
    &["transport", "discovery", "lease", "handover"],
    &["membership"],
    &["bootstrap"],
    &["management"],
    &["agent", "local_cluster", "fuzzing"],
];

fn layer(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| {
            panic!(
                "module `{top}` is in no layer: add it to LAYERS here and to the list in src/lib.rs"
            )
        })
}

/// A file's module path: `membership/core/tests.rs` → membership, core, tests.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    if last != "mod.rs" && last != "lib.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source without comments (line comments, and block comments, which never nest here).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the crate root re-exports (`pub use agent::{Agent, AgentError};`): item → module.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for statement in code(lib).split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let mut words = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty());
        let Some(module) = words.next() else { continue };
        for item in words {
            out.insert(item.to_owned(), module.to_owned());
        }
    }
    out
}

/// The paths a text names after `crate::` or `super::` (with `use … {a, b::c}` groups
/// expanded, across lines), each as segments up to the first that is not a module name
/// (lowercase); `super` resolved against the file's module `here`. `super` inside an
/// inline `mod x { … }` is read as the file's: such blocks hold tests, which use their
/// own module.
fn referenced(line: &str, here: &[String]) -> Vec<Vec<String>> {
    // `super` of module `a::b` (`a/b.rs`, or `a/b/mod.rs`) is `a`.
    let parent = here[..here.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(i) = line[from..].find(prefix).map(|i| from + i) {
            from = i + prefix.len();
            // The tail of a longer path (`super::super::x` counts once, from its first
            // `super`; `node_agent::crate::` does not exist).
            if line[..i].ends_with("::") {
                continue;
            }
            let mut base = base.clone();
            let mut tail = &line[from..];
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
            }
            expand(tail, &base, &mut out);
        }
    }
    out
}

/// Expands one use-tree (`a::b`, `a::{b, c::d}`) into paths under `base`.
fn expand(tree: &str, base: &[String], out: &mut Vec<Vec<String>>) {
    let ident_end = tree
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(tree.len());
    let ident = &tree[..ident_end];
    let after = &tree[ident_end..];
    if ident.is_empty() {
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(group[start..i].trim(), base, out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(group[start..i].trim(), base, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        }
        return;
    }
    let mut path = base.to_vec();
    path.push(ident.to_owned());
    match after.strip_prefix("::") {
        Some(more) if more.starts_with(|c: char| c == '{' || c.is_ascii_lowercase()) => {
            expand(more, &path, out)
        }
        _ => out.push(path),
    }
}

/// The unit a path belongs to: the longest prefix that is a module, cut to two segments
/// (`membership::core::tests` is part of `membership::core`).
fn unit(path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    let known = (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default();
    known.into_iter().take(2).collect()
}

#[test]
fn modules_import_only_downward_and_never_in_a_cycle() {
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(src, f)).collect();
    let root_exports = root_exports(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));

    let mut upward = Vec::new();
    // unit → units it uses (excluding itself, its own parent and its own children).
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let here = module_path(src, file);
        if here.is_empty() {
            continue; // lib.rs only declares and re-exports
        }
        let from = unit(&here, &modules);
        let text = code(&std::fs::read_to_string(file).expect("read a source file"));
        let shown = file.strip_prefix(src).expect("under src").display();
        assert!(
            !text.contains("crate::*"),
            "{shown}: `use crate::*` hides what it imports; name the modules"
        );
        for path in referenced(&text, &here) {
            // An item the crate root re-exports stands for the module it comes from.
            let path = match root_exports.get(&path[0]) {
                Some(module) => vec![module.clone()],
                None => path,
            };
            let to = unit(&path, &modules);
            if to.is_empty() || to == from {
                continue;
            }
            let (a, b) = (&from[0], &to[0]);
            if a != b {
                if layer(b) >= layer(a) {
                    upward.push(format!("{shown}: `{}` is not below `{a}`", path.join("::")));
                }
            } else if from.len() == 1 || to.len() == 1 {
                continue; // a subsystem's root and its own parts
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a module that is not in a lower layer (see LAYERS and src/lib.rs):\n  {}",
        upward.join("\n  ")
    );

    // No cycle: depth-first search with the path kept for the message.
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        done: &mut BTreeSet<Vec<String>>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<String> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let cycle: Vec<String> = stack[i..].iter().chain([n]).map(|s| s.join("::")).collect();
            return Some(cycle.join(" → "));
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut done, &mut Vec::new()) {
            panic!("modules import each other in a cycle: {cycle}");
        }
    }
    // The check sees the imports it must: membership uses base, and the transport is
    // below membership.
    assert!(
        edges[&vec!["membership".to_owned(), "core".to_owned()]]
            .contains(&vec!["base".to_owned(), "time".to_owned()])
    );
    assert!(
        edges[&vec!["membership".to_owned(), "messages".to_owned()]]
            .contains(&vec!["transport".to_owned()])
    );
}

#[test]
fn the_reader_finds_grouped_and_relative_paths() {
    let here = vec!["bootstrap".to_owned(), "coordinator".to_owned()];
    let paths = referenced(
        "use crate::{api::{ClientError, SeedNodes}, base::time}; use super::state::Bootstrap;",
        &here,
    );
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        shown,
        [
            "api::ClientError",
            "api::SeedNodes",
            "base::time",
            "bootstrap::state"
        ],
        "paths end at the first item that is not a module (a type)"
    );
    let grouped = referenced(
        "use crate::{\n    api::check,\n    base::{address::NodeAddress, time},\n};",
        &here,
    );
    let shown: Vec<String> = grouped.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        shown,
        ["api::check", "base::address", "base::time"],
        "across lines"
    );
    let exports = root_exports(
        "pub mod agent;\npub use agent::{Agent, AgentError};\npub use config::AgentConfig;",
    );
    assert_eq!(exports.get("Agent").map(String::as_str), Some("agent"));
    assert_eq!(
        exports.get("AgentConfig").map(String::as_str),
        Some("config")
    );
    assert_eq!(
        code("a /* crate::x */ b // crate::y\nc"),
        "a  b \nc",
        "comments are not code"
    );
    let nested = vec!["config".to_owned(), "duration".to_owned()];
    let paths = referenced("super::super::show_value(&v)", &nested);
    assert_eq!(paths, [vec!["show_value".to_owned()]]);
}
