//! The crate's modules form layers: no module reaches, directly or through others, back into
//! one that uses it. Read from the source: every `crate::<module>` path in code (comments
//! excluded) is an edge from the file's top-level module to `<module>`. docs/architecture.md
//! draws the layers this test computes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules of `src/` and, for each, the top-level modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    for file in &files {
        let Some(from) = module_of(&src, file) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        let uses = graph.entry(from.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if name != from && modules.contains(&name) {
                    uses.insert(name);
                }
            }
            // `use crate::{a::X, b::Y}` names several modules at once.
            if let Some(group) = code.split("crate::{").nth(1) {
                for part in group.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name != from && modules.contains(&name) {
                        uses.insert(name);
                    }
                }
            }
        }
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/dispatch/policy.rs` → `dispatch`; `src/sim.rs` → `sim`; the crate root has none.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Layers from the bottom: each module sits one above the highest module it uses.
fn layers(graph: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<BTreeSet<String>>, BTreeSet<String>> {
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    while placed.len() < graph.len() {
        let ready: Vec<(String, usize)> = graph
            .iter()
            .filter(|(m, _)| !placed.contains_key(*m))
            .filter(|(_, uses)| uses.iter().all(|u| placed.contains_key(u)))
            .map(|(m, uses)| (m.clone(), uses.iter().map(|u| placed[u] + 1).max().unwrap_or(0)))
            .collect();
        if ready.is_empty() {
            return Err(graph.keys().filter(|m| !placed.contains_key(*m)).cloned().collect());
        }
        placed.extend(ready);
    }
    let mut out = vec![BTreeSet::new(); placed.values().max().map_or(0, |m| m + 1)];
    for (m, layer) in placed {
        out[layer].insert(m);
    }
    Ok(out)
}

#[test]
fn the_modules_form_layers_without_a_cycle() {
    let graph = graph();
    assert!(
        graph.contains_key("dispatch") && graph.contains_key("dialect"),
        "{graph:?}"
    );
    match layers(&graph) {
        Ok(layers) => {
            for (i, layer) in layers.iter().enumerate().rev() {
                println!("layer {i}: {}", layer.iter().cloned().collect::<Vec<_>>().join(", "));
            }
        }
        Err(stuck) => {
            let edges: Vec<String> = stuck
                .iter()
                .map(|m| format!("{m} -> {:?}", graph[m].intersection(&stuck).collect::<Vec<_>>()))
                .collect();
            panic!("these modules use each other in a cycle:\n{}", edges.join("\n"));
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("c".to_string(), BTreeSet::new());
    assert_eq!(
        layers(&g).unwrap_err(),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
}
