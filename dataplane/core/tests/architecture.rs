//! The shape of the core (issue 9, item 7), checked on its own sources
//! with a Rust parser (`syn`): the modules of `b2bua/` import one another
//! one way (no cycle), and no function outside tests is longer than 80
//! lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The longest function allowed, in lines from `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

/// A module's path below the directory read (`[]` for its `mod.rs`).
type ModPath = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, by module path (`probe/mod.rs` is
/// `["probe"]`, `probe/state.rs` is `["probe", "state"]`, `mod.rs` is `[]`).
fn read_modules(dir: &Path) -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap().with_extension("");
                let mut segs: ModPath = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
                    segs.pop();
                }
                out.insert(segs, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

/// `#[cfg(test)]`, alone or as `#[cfg(all(test, ...))]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .to_string()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "test")
            })
    })
}

/// The paths a file names outside its tests, each as written (`use`
/// trees expanded: `use super::{a, b::c}` is `super::a` and
/// `super::b::c`), and what it re-exports (`pub use`: name → path).
#[derive(Default)]
struct Names {
    paths: Vec<Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
}

impl Names {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, public);
                prefix.pop();
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, public);
                }
            }
            syn::UseTree::Name(n) => self.named(prefix, &n.ident, &n.ident, public),
            syn::UseTree::Rename(r) => self.named(prefix, &r.ident, &r.rename, public),
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
        }
    }

    fn named(&mut self, prefix: &[String], ident: &syn::Ident, name: &syn::Ident, public: bool) {
        let mut path = prefix.to_vec();
        // `use x::{self}` names `x`.
        if ident != "self" {
            path.push(ident.to_string());
        }
        if public {
            self.reexports.insert(name.to_string(), path.clone());
        }
        self.paths.push(path);
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_test(attrs) {
            return;
        }
        if let syn::Item::Use(u) = item {
            let public = !matches!(u.vis, syn::Visibility::Inherited);
            self.use_tree(&mut Vec::new(), &u.tree, public);
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if let syn::ImplItem::Fn(f) = item
            && is_test(&f.attrs)
        {
            return;
        }
        syn::visit::visit_impl_item(self, item);
    }

    // `pub(super)` and `pub(in path)` say who may see an item, not what
    // it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.paths
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }
}

/// Which module each file of `mods` names, following re-exports (a name
/// `mod.rs` re-exports stands for the module it comes from).
fn imports(
    mods: &BTreeMap<ModPath, String>,
    crate_prefix: &[&str],
) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let names: BTreeMap<&ModPath, Names> = mods
        .iter()
        .map(|(m, text)| {
            let file = syn::parse_file(text).unwrap_or_else(|e| panic!("{m:?}: {e}"));
            let mut n = Names::default();
            n.visit_file(&file);
            (m, n)
        })
        .collect();
    // An absolute path (from the directory read) to the module it names.
    let resolve = |abs: &[String]| -> Option<ModPath> {
        let mut abs = abs.to_vec();
        for _ in 0..8 {
            let n = (0..=abs.len())
                .rev()
                .find(|&n| mods.contains_key(&abs[..n]))?;
            let module = abs[..n].to_vec();
            // A name the module re-exports: the module it comes from.
            let Some(next) = abs.get(n) else {
                return Some(module);
            };
            match names[&module].reexports.get(next) {
                Some(target) => {
                    let mut base = module.clone();
                    let rest = abs[n + 1..].to_vec();
                    abs = absolute(&mut base, target, crate_prefix, mods)?;
                    abs.extend(rest);
                }
                None => return Some(module),
            }
        }
        None
    };
    let mut graph = BTreeMap::new();
    for (m, n) in &names {
        let mut deps = BTreeSet::new();
        for path in &n.paths {
            let mut here = (*m).clone();
            if let Some(abs) = absolute(&mut here, path, crate_prefix, mods)
                && let Some(dep) = resolve(&abs)
                && dep != **m
            {
                deps.insert(dep);
            }
        }
        graph.insert((*m).clone(), deps);
    }
    graph
}

/// `path`, written in module `here`, as a path from the directory read;
/// `None` when it leads elsewhere (std, another crate, another part of
/// this one).
fn absolute(
    here: &mut ModPath,
    path: &[String],
    crate_prefix: &[&str],
    mods: &BTreeMap<ModPath, String>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut rest = path;
    if first == "crate" {
        let inside = path.get(1..=crate_prefix.len())?;
        if inside.iter().zip(crate_prefix).any(|(a, b)| a != b) {
            return None;
        }
        return Some(path[1 + crate_prefix.len()..].to_vec());
    }
    let mut base = here.clone();
    while let Some(s) = rest.first() {
        match s.as_str() {
            "super" => {
                base.pop()?;
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    if rest.len() == path.len() {
        // No `super`/`self`: a child module of `here`, or not ours.
        let mut child = here.clone();
        child.push(first.clone());
        if !mods.contains_key(&child) {
            return None;
        }
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// One import cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    fn visit(
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        node: &ModPath,
        done: &mut BTreeSet<ModPath>,
        path: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        if let Some(from) = path.iter().position(|p| p == node) {
            let mut cycle = path[from..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, next, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut done, &mut Vec::new()))
}

fn fixture(files: &[(&str, &str)]) -> BTreeMap<ModPath, String> {
    files
        .iter()
        .map(|(m, text)| {
            let path = m
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (path, (*text).to_owned())
        })
        .collect()
}

fn p(m: &str) -> ModPath {
    m.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_b2bua_modules_import_one_another_one_way() {
    let mods = read_modules(&src().join("b2bua"));
    assert!(mods.len() > 20, "read the b2bua sources");
    let graph = imports(&mods, &["b2bua"]);
    // The reading sees the imports it should.
    assert!(
        graph[&p("engine")].contains(&p("context")),
        "{:?}",
        graph[&p("engine")]
    );
    assert!(graph[&p("context")].contains(&p("probe/state")));
    assert!(graph[&p("probe")].contains(&p("context")));
    assert!(graph[&p("probe")].contains(&p("probe/state")));
    // `super::Event`, re-exported by b2bua/mod.rs, is `event`.
    assert!(
        graph[&p("lookup")].contains(&p("event")),
        "{:?}",
        graph[&p("lookup")]
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import cycle in b2bua/: {cycle:?}");
    }
}

#[test]
fn grouped_imports_re_exports_and_children_are_followed() {
    // a -> b through a group, b -> a through the root's re-export: a cycle.
    let mods = fixture(&[
        ("", "mod a; mod b; pub use a::Thing;"),
        ("a", "use super::{b::{self, X}, other};\npub struct Thing;"),
        ("b", "pub struct X; fn f() { let _ = super::Thing; }"),
        ("other", ""),
    ]);
    let graph = imports(&mods, &["x"]);
    assert_eq!(graph[&p("a")], [p("b"), p("other")].into_iter().collect());
    assert_eq!(graph[&p("b")], [p("a")].into_iter().collect());
    assert!(find_cycle(&graph).is_some());
    // A child naming its parent, which uses it: a cycle too; test code
    // and other crates' paths do not count.
    let mods = fixture(&[
        ("", "mod p;"),
        ("p", "mod state; use state::S; pub fn g() {}"),
        (
            "p/state",
            "pub struct S; fn f() { crate::x::p::g(); }\n#[cfg(test)]\nmod tests { use super::super::p; }",
        ),
    ]);
    let graph = imports(&mods, &["x"]);
    assert_eq!(graph[&p("p/state")], [p("p")].into_iter().collect());
    assert!(find_cycle(&graph).is_some());
    let mods = fixture(&[
        ("", "mod p;"),
        ("p", "mod state; use state::S;"),
        (
            "p/state",
            "use std::sync::Arc; pub struct S(pub(super) Arc<u8>);\n#[cfg(test)]\nmod tests { fn t() { super::super::p::g(); } }",
        ),
    ]);
    assert_eq!(find_cycle(&imports(&mods, &["x"])), None);
}

/// Functions (free, methods, trait defaults) of `text` outside tests
/// longer than the limit: (line of `fn`, lines).
fn long_functions(text: &str) -> Vec<(usize, usize)> {
    struct Long(Vec<(usize, usize)>);
    impl Long {
        fn check(&mut self, attrs: &[syn::Attribute], sig: &syn::Signature, block: &syn::Block) {
            if is_test(attrs) {
                return;
            }
            let first = sig.fn_token.span.start().line;
            let last = block.brace_token.span.close().end().line;
            let n = last + 1 - first;
            if n > MAX_FUNCTION_LINES {
                self.0.push((first, n));
            }
        }
    }
    impl<'ast> Visit<'ast> for Long {
        fn visit_item(&mut self, item: &'ast syn::Item) {
            let attrs = match item {
                syn::Item::Mod(i) => &i.attrs,
                syn::Item::Impl(i) => &i.attrs,
                syn::Item::Fn(i) => &i.attrs,
                syn::Item::Trait(i) => &i.attrs,
                _ => return syn::visit::visit_item(self, item),
            };
            if !is_test(attrs) {
                syn::visit::visit_item(self, item);
            }
        }
        fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
            self.check(&f.attrs, &f.sig, &f.block);
            syn::visit::visit_item_fn(self, f);
        }
        fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
            self.check(&f.attrs, &f.sig, &f.block);
            syn::visit::visit_impl_item_fn(self, f);
        }
        fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
            if let Some(block) = &f.default {
                self.check(&f.attrs, &f.sig, block);
            }
            syn::visit::visit_trait_item_fn(self, f);
        }
    }
    let file = syn::parse_file(text).unwrap();
    let mut long = Long(Vec::new());
    long.visit_file(&file);
    long.0
}

#[test]
fn no_function_in_the_core_is_over_80_lines() {
    let mods = read_modules(&src());
    assert!(mods.len() > 40, "read the core's sources");
    let long: Vec<String> = mods
        .iter()
        .flat_map(|(m, text)| {
            long_functions(text)
                .into_iter()
                .map(move |(line, n)| format!("{}:{line}: {n} lines", m.join("/")))
        })
        .collect();
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn a_long_function_is_found_wherever_it_is() {
    let body = "    x();\n".repeat(MAX_FUNCTION_LINES);
    let text = format!(
        "/// Doc lines are not counted.\nfn short() {{\n    x();\n}}\n\npub(crate) const fn long() {{\n{body}}}\n\
         #[cfg(test)]\nfn test_only() {{\n{body}}}\n\
         struct S;\nimpl S {{\n    #[cfg(test)]\n    fn t() {{}}\n    unsafe fn method() {{\n{body}    }}\n}}\n"
    );
    let found = long_functions(&text);
    let lines = MAX_FUNCTION_LINES + 2;
    assert_eq!(
        found,
        [(6, lines), (6 + lines + 1 + lines + 4, lines)],
        "{text}"
    );
}
