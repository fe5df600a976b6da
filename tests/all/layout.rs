//! The host's layout: its top-level modules use each other without a cycle, so
//! that each can be read (and changed) knowing only those below it. `kafka` is
//! transport and knows nothing of what is done with a message.

use boulder_tests::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module of `host/src` (the binary's `cli` aside) and the other
/// top-level modules its code names as `crate::<module>` (comments aside).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("host/src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let top = module_of(relative);
        if path.extension().is_none_or(|e| e != "rs")
            || ["cli", "main", "lib"].contains(&top.as_str())
        {
            continue;
        }
        let uses = graph.entry(top.clone()).or_default();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn the_hosts_modules_use_each_other_without_a_cycle() {
    let graph = module_graph();
    assert!(
        graph.contains_key("service") && graph.contains_key("kafka"),
        "{graph:?}"
    );
    // Depth-first, each path from a module: a module met again on its own path is a cycle.
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        let here = path.last().unwrap().clone();
        for next in graph.get(&here).into_iter().flatten() {
            assert!(!path.contains(next), "a cycle: {path:?} -> {next}");
            if done.insert(next.clone()) {
                path.push(next.clone());
                visit(graph, path, done);
                path.pop();
            }
        }
    }
    for module in graph.keys() {
        visit(&graph, &mut vec![module.clone()], &mut BTreeSet::new());
    }
    let transport = &graph["kafka"];
    for outside in ["pipeline", "dlq", "service", "sink", "runtime"] {
        assert!(
            !transport.contains(outside),
            "kafka uses {outside}: {transport:?}"
        );
    }
}
