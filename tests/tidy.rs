//! Keeps ARCHITECTURE.md's boundaries true by reading the source: only the store touches redb,
//! only the HTTP module listens, plugins are named only in the registry, plugin crates depend
//! only on plugins/api, nothing in the library imports the wiring (`daemon`), and the host's
//! modules form no import circle. Test code (after `#[cfg(test)]`, test-only files) is exempt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Production code of a file: without comments and without the test module at its end.
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The library's files as (path relative to src/, production code); test-only files skipped.
fn library() -> Vec<(String, String)> {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, p)
        })
        .filter(|(rel, _)| !rel.contains("test"))
        .map(|(rel, p)| (rel, production_code(&p)))
        .collect()
}

fn top_module(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

fn is_binary(rel: &str) -> bool {
    rel == "main.rs" || rel.starts_with("cli/")
}

#[test]
fn only_the_store_touches_redb() {
    for (rel, code) in library() {
        if rel.starts_with("store/") {
            continue;
        }
        assert!(
            !code.contains("redb::") && !code.contains("use redb"),
            "src/{rel} uses redb; only src/store/ may"
        );
    }
}

#[test]
fn only_the_http_module_listens() {
    for (rel, code) in library() {
        if rel.starts_with("http/") {
            continue;
        }
        for needle in [
            "TcpListener::bind",
            "UnixListener::bind",
            "UdpSocket::bind",
            "TcpSocket::new",
        ] {
            assert!(
                !code.contains(needle),
                "src/{rel} listens ({needle}); only src/http/ may"
            );
        }
    }
}

#[test]
fn plugins_are_named_only_in_the_registry() {
    for (rel, code) in library() {
        if rel == "registry.rs" {
            continue;
        }
        for plugin in ["guid", "title", "tmdb", "exec", "tracker"] {
            let krate = format!("plexsync_plugin_{plugin}");
            assert!(
                !code.contains(&krate),
                "src/{rel} names the {plugin} plugin; only src/registry.rs may"
            );
        }
    }
}

#[test]
fn plugin_crates_depend_only_on_the_plugin_api() {
    let plugins = Path::new(ROOT).join("plugins");
    for e in std::fs::read_dir(&plugins).unwrap() {
        let dir = e.unwrap().path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.exists() || dir.ends_with("api") {
            continue;
        }
        let text = std::fs::read_to_string(&manifest).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = table.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for (name, spec) in deps {
                assert!(
                    name != "plexsync"
                        && !(name.starts_with("plexsync") && name != "plexsync-plugin-api"),
                    "{} [{section}] depends on {name}: plugins depend only on plugins/api",
                    manifest.display()
                );
                let path = spec.get("path").and_then(|p| p.as_str()).unwrap_or("");
                assert!(
                    path.is_empty() || path.trim_end_matches('/').ends_with("api"),
                    "{} [{section}] {name} has path {path:?}: plugins reach only plugins/api",
                    manifest.display()
                );
                let workspace = spec.get("workspace").and_then(|w| w.as_bool()) == Some(true);
                assert!(
                    !(workspace && name.starts_with("plexsync") && name != "plexsync-plugin-api"),
                    "{} [{section}] {name}: plugins depend only on plugins/api",
                    manifest.display()
                );
            }
        }
    }
}

/// The host's module graph: top-level module → the top-level modules it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files = library();
    let known: BTreeSet<String> = files
        .iter()
        .filter(|(rel, _)| !is_binary(rel) && rel != "lib.rs")
        .map(|(rel, _)| top_module(rel))
        .collect();
    for (rel, code) in &files {
        if is_binary(rel) || rel == "lib.rs" {
            continue;
        }
        let me = top_module(rel);
        let entry = graph.entry(me.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != me && known.contains(&name) {
                entry.insert(name);
            }
        }
    }
    graph
}

#[test]
fn nothing_in_the_library_imports_the_wiring() {
    for (module, deps) in module_graph() {
        assert!(
            !deps.contains("daemon"),
            "src/{module} imports crate::daemon, the wiring at the top of the graph"
        );
    }
}

#[test]
fn the_host_modules_form_no_circle() {
    let graph = module_graph();
    // Depth-first search for a back edge; report the circle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut circle = path[i..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!(
                "import circle among the host's modules: {}",
                circle.join(" → ")
            );
        }
    }
    // The graph is not trivially empty.
    assert!(graph.get("daemon").is_some_and(|d| d.contains("state")));
}

#[test]
fn the_codemap_names_every_module() {
    let codemap = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for (rel, _) in library() {
        let module = top_module(&rel);
        if rel == "lib.rs" || rel == "main.rs" {
            continue;
        }
        let file = format!("src/{module}.rs");
        let dir = format!("src/{module}/");
        if !codemap.contains(&file) && !codemap.contains(&dir) {
            missing.push(module);
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's codemap lacks: {missing:?}"
    );
}
