//! The shape of the core (issue 9, item 7), checked on its own sources:
//! the modules of `b2bua/` import one another one way (no cycle), and no
//! function outside tests is longer than 80 lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest function allowed, in lines from `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, by module path relative to it
/// (`probe/mod.rs` is `probe`, `probe/state.rs` is `probe/state`).
fn modules(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap().with_extension("");
                let name = rel.to_string_lossy().replace('\\', "/");
                let name = name.strip_suffix("/mod").unwrap_or(&name).to_owned();
                out.insert(name, path);
            }
        }
    }
    out
}

/// The code of a file without its test module and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest module of `mods` that `path` (segments) names.
fn resolve(mods: &BTreeMap<String, PathBuf>, path: &[&str]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("/"))
        .find(|cand| mods.contains_key(cand))
}

/// Which modules of `b2bua/` each one names (`super::x`, `crate::b2bua::x`,
/// or a child module it declares and uses).
fn imports(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (name, path) in mods {
        let code = code(path);
        let here: Vec<&str> = name.split('/').collect();
        let mut deps = BTreeSet::new();
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < code.len() {
            let rest = &code[i..];
            let (base, after): (Vec<&str>, &str) = if rest.starts_with("super::") {
                let mut ups = 0;
                let mut r = rest;
                while let Some(x) = r.strip_prefix("super::") {
                    ups += 1;
                    r = x;
                }
                // `super` of a file's module: its parent (a `mod.rs` is
                // the module of its directory).
                let keep = here.len().saturating_sub(ups);
                (here[..keep].to_vec(), r)
            } else if let Some(r) = rest.strip_prefix("crate::b2bua::") {
                (Vec::new(), r)
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
                continue;
            };
            // Only at the start of a path, not inside an identifier.
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            let segs: Vec<&str> = after
                .split("::")
                .map(|s| {
                    let end = s
                        .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
                        .unwrap_or(s.len());
                    &s[..end]
                })
                .take_while(|s| !s.is_empty())
                .collect();
            let mut full = base;
            full.extend(segs);
            if boundary
                && let Some(dep) = resolve(mods, &full)
                && dep != *name
                && !name.starts_with(&format!("{dep}/"))
            {
                deps.insert(dep);
            }
            i += 1;
        }
        // `mod x;` then `use x::...`: the child module.
        for line in code.lines() {
            if let Some(child) = line
                .trim()
                .strip_prefix("use ")
                .and_then(|u| u.split("::").next())
                && let Some(dep) = resolve(mods, &[name.as_str(), child])
                && dep != *name
            {
                deps.insert(dep);
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// One import cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(graph, next, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(graph, node, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_b2bua_modules_import_one_another_one_way() {
    let mods = modules(&src().join("b2bua"));
    assert!(mods.len() > 20, "read the b2bua sources: {mods:?}");
    let graph = imports(&mods);
    // The reading sees the imports it should.
    assert!(graph["engine"].contains("context"), "{:?}", graph["engine"]);
    assert!(
        graph["context"].contains("probe/state"),
        "{:?}",
        graph["context"]
    );
    assert!(graph["probe"].contains("context"), "{:?}", graph["probe"]);
    assert_eq!(find_cycle(&graph), None, "an import cycle in b2bua/");
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    let mut acyclic = graph;
    acyclic.insert("c".into(), BTreeSet::new());
    assert_eq!(find_cycle(&acyclic), None);
}

/// The functions of `code` longer than the limit: (first line, lines).
fn long_functions(code: &str) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "const fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        // A declaration without a body (a trait's) ends in `;`.
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
            let n = end + 2;
            if n > MAX_FUNCTION_LINES {
                long.push((i + 1, n));
            }
        }
    }
    long
}

#[test]
fn no_function_in_the_core_is_over_80_lines() {
    let mods = modules(&src());
    assert!(mods.len() > 40, "read the core's sources");
    let mut long = Vec::new();
    for (name, path) in &mods {
        let text = std::fs::read_to_string(path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (line, n) in long_functions(code) {
            long.push(format!("{name}.rs:{line}: {n} lines"));
        }
    }
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn a_long_function_is_found() {
    let body = "    x();\n".repeat(MAX_FUNCTION_LINES);
    let code = format!("fn short() {{\n    x();\n}}\n\npub fn long() {{\n{body}}}\n");
    assert_eq!(long_functions(&code), [(5, MAX_FUNCTION_LINES + 2)]);
}
