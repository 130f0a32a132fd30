//! The layering of `src/`, read from the source: no file imports a file that imports it
//! (directly or around a cycle), test modules included, and nothing in the core names the
//! driver. A file's imports are the `crate::` and `super::` paths in its code (comments are
//! left out); each names the deepest module it reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/` with its source, keyed by path (`core::engine`).
fn modules() -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let root = dirs[0].clone();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut name: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if name.last().is_some_and(|last| last == "mod") {
                name.pop();
            }
            let code: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .map(|line| format!("{line}\n"))
                .collect();
            found.insert(name.join("::"), code);
        }
    }
    found
}

/// The modules each module imports.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut graph = BTreeMap::new();
    for (name, code) in modules {
        let parent: Vec<&str> = name.split("::").collect::<Vec<_>>()[..]
            .split_last()
            .map_or(vec![], |(_, rest)| rest.to_vec());
        let mut edges = BTreeSet::new();
        for (prefix, base) in [("crate::", vec![]), ("super::", parent.clone())] {
            for (at, _) in code.match_indices(prefix) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue; // part of a longer path (`super::super::`, `x::crate::`)
                }
                let path: String = code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut parts: Vec<&str> = base.clone();
                parts.extend(path.split("::").filter(|p| !p.is_empty()));
                // The deepest module the path reaches.
                let target = (1..=parts.len())
                    .rev()
                    .map(|n| parts[..n].join("::"))
                    .find(|candidate| modules.contains_key(candidate));
                if let Some(target) = target.filter(|t| t != name) {
                    let (key, _) = modules.get_key_value(&target).unwrap();
                    edges.insert(key.as_str());
                }
            }
        }
        graph.insert(name.as_str(), edges);
    }
    graph
}

/// A cycle through `from`, if any: the path back to it.
fn cycle_through<'a>(
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    from: &'a str,
) -> Option<Vec<&'a str>> {
    let mut stack = vec![(from, vec![from])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for &next in &graph[at] {
            if next == from {
                return Some(path);
            }
            if seen.insert(next) {
                let mut longer = path.clone();
                longer.push(next);
                stack.push((next, longer));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let modules = modules();
    assert!(modules.contains_key("core::engine") && modules.contains_key("driver::context"));
    let graph = imports(&modules);
    for &module in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, module) {
            panic!("an import cycle: {} -> {module}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_core_imports_nothing_of_the_driver() {
    let modules = modules();
    let graph = imports(&modules);
    for (module, edges) in &graph {
        if module.starts_with("core") {
            let driver: Vec<_> = edges.iter().filter(|e| e.starts_with("driver")).collect();
            assert!(driver.is_empty(), "{module} imports {driver:?}");
        }
    }
}
