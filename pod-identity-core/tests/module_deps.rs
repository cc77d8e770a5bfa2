//! Core's modules depend on each other one way: the `crate::<module>` paths each module names
//! form no cycle.

// Test helpers outside `#[test]` functions: an unreadable source tree should panic loudly.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

/// Each module under `src/` (a `foo/bar.rs` counts as `foo`) and the modules it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![std::path::PathBuf::from(&src)];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let relative = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = relative.split(['/', '.']).next().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                uses.insert(name);
            }
        }
    }
    graph
}

#[test]
fn modules_form_no_cycle() {
    let mut graph = module_graph();
    assert!(graph.len() > 5, "read the modules: {graph:?}");
    // Peel off modules that name no remaining module; a cycle is what cannot be peeled.
    loop {
        let leaves: Vec<String> = graph
            .iter()
            .filter(|(_, uses)| uses.iter().all(|u| !graph.contains_key(u)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            break;
        }
        for leaf in leaves {
            graph.remove(&leaf);
        }
    }
    assert!(graph.is_empty(), "modules in a cycle: {graph:?}");
}
