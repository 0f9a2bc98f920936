//! Tidy checks of the workspace's invariants, run by `cargo test`: a green local run is a
//! green CI.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use serde_json::Value;

    use crate::root;

    fn cargo() -> Command {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command.current_dir(root());
        command
    }

    fn metadata() -> Value {
        let output = cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .expect("cargo metadata runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Heavy backends and which workspace crates may declare them as dependencies.
    const BACKENDS: &[(&str, &[&str])] = &[
        (
            "sqlx",
            &["jobs-postgres", "jobs-sqlite", "app", "api", "worker"],
        ),
        ("aws-sdk-s3", &["blob-store", "app", "api", "worker"]),
        ("aws-config", &["blob-store", "app", "api", "worker"]),
        ("axum", &["api", "worker"]),
    ];

    #[test]
    fn backends_are_declared_only_by_their_crates() {
        let metadata = metadata();
        let mut violations = Vec::new();
        for package in metadata["packages"].as_array().unwrap() {
            let name = package["name"].as_str().unwrap();
            for dependency in package["dependencies"].as_array().unwrap() {
                let dependency = dependency["name"].as_str().unwrap();
                for (backend, allowed) in BACKENDS {
                    if dependency == *backend && !allowed.contains(&name) {
                        violations.push(format!("{name} depends on {backend}"));
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "Architecture Invariant broken: {violations:#?}"
        );
    }

    /// The packages `cargo tree -p package -e normal` lists: what the crate pulls in when it
    /// is built on its own (features resolved for it alone).
    fn tree(package: &str) -> Vec<String> {
        let output = cargo()
            .args([
                "tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}",
            ])
            .output()
            .expect("cargo tree runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// The crates that must know nothing of the backends. A crate named here that does not
    /// exist fails the check: it never passes by skipping.
    const CORE_AND_DOMAIN_CRATES: [&str; 7] = [
        "jobs-core",
        "page-jobs",
        "books",
        "chat-client",
        "ingest",
        "ocr",
        "extraction",
    ];

    /// Architecture Invariant: jobs-core and the domain crates know nothing of sqlx,
    /// Postgres, SQLite, axum or aws-sdk-s3, not even through another crate.
    #[test]
    fn core_and_domain_crates_reach_no_backend() {
        let members: Vec<String> = metadata()["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|package| package["name"].as_str().unwrap().to_owned())
            .collect();
        let forbidden = [
            "sqlx",
            "sqlx-core",
            "libsqlite3-sys",
            "axum",
            "aws-sdk-s3",
            "aws-config",
        ];
        for package in CORE_AND_DOMAIN_CRATES {
            assert!(
                members.iter().any(|name| name == package),
                "the tidy check is told to check {package}, which is not a workspace member"
            );
            let tree = tree(package);
            assert!(
                tree.iter().any(|name| name == package),
                "cargo tree -p {package} did not list {package}: {tree:?}"
            );
            let reached: Vec<String> = tree
                .into_iter()
                .filter(|name| forbidden.contains(&name.as_str()))
                .collect();
            assert!(reached.is_empty(), "{package} reaches {reached:?}");
        }
    }

    /// The versions in a store crate's `migrations` folder (each crate embeds its own, so
    /// it packages alone).
    fn migration_versions(store_crate: &str) -> BTreeSet<String> {
        let folder = root().join("crates").join(store_crate).join("migrations");
        fs::read_dir(&folder)
            .unwrap_or_else(|error| panic!("reading {}: {error}", folder.display()))
            .map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(
                    name.ends_with(".sql"),
                    "unexpected file {name} in {}",
                    folder.display()
                );
                name.split('_').next().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn both_migration_folders_have_the_same_versions() {
        let postgres = migration_versions("jobs-postgres");
        let sqlite = migration_versions("jobs-sqlite");
        assert!(!postgres.is_empty());
        assert_eq!(
            postgres, sqlite,
            "crates/jobs-postgres/migrations and crates/jobs-sqlite/migrations differ"
        );
    }

    #[test]
    fn every_crate_root_has_module_docs() {
        let mut roots = Vec::new();
        for folder in ["crates", "bins"] {
            let entries = fs::read_dir(root().join(folder))
                .unwrap_or_else(|error| panic!("reading {folder}/: {error}"));
            for entry in entries {
                let src = entry.unwrap().path().join("src");
                for file in ["lib.rs", "main.rs"] {
                    if src.join(file).exists() {
                        roots.push(src.join(file));
                    }
                }
            }
        }
        assert!(!roots.is_empty());
        for path in roots {
            let text = fs::read_to_string(&path).unwrap();
            // `//!` lines, or the crate's README as its doc (`#![doc = include_str!(...)]`).
            let text = text.trim_start();
            assert!(
                text.starts_with("//!") || text.starts_with("#![doc = include_str!("),
                "{} lacks a //! doc",
                path.display()
            );
        }
    }

    #[test]
    fn sql_stays_in_the_store_crates() {
        let allowed = ["jobs-postgres", "jobs-sqlite", "app"];
        for folder in ["crates", "bins"] {
            let entries = fs::read_dir(root().join(folder))
                .unwrap_or_else(|error| panic!("reading {folder}/: {error}"));
            for entry in entries {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                if allowed.contains(&name.as_str()) {
                    continue;
                }
                for file in rust_files(&path.join("src")) {
                    let text = fs::read_to_string(&file).unwrap();
                    assert!(!text.contains("sqlx::"), "{} uses sqlx", file.display());
                }
            }
        }
    }

    /// The module of a source file of a library crate, relative to its `src`: `lib.rs` is
    /// `crate`, `a.rs` and `a/mod.rs` are `a`, `a/b.rs` is `a::b`.
    fn module_of(file: &Path) -> String {
        let mut segments: Vec<String> = file
            .with_extension("")
            .components()
            .map(|component| component.as_os_str().to_string_lossy().into_owned())
            .collect();
        if segments.last().is_some_and(|last| last == "mod") {
            segments.pop();
        }
        if segments == ["lib"] {
            return "crate".to_owned();
        }
        segments.join("::")
    }

    /// The paths `text` names after `crate::` (`use crate::{a, b::c}` gives both), each as
    /// its segments, and the `super::` paths with `super` kept as the first segment.
    fn crate_paths(text: &str) -> Vec<Vec<String>> {
        fn segments(path: &str) -> Vec<String> {
            path.split("::")
                .map(|segment| {
                    segment
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|segment| !segment.is_empty())
                .collect()
        }
        let mut paths = Vec::new();
        for keyword in ["crate::", "super::"] {
            for (at, _) in text.match_indices(keyword) {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let prefix: Vec<String> = if keyword == "super::" {
                    vec!["super".to_owned()]
                } else {
                    Vec::new()
                };
                let rest = &text[at + keyword.len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // The top-level items of the brace group.
                    let mut depth = 0;
                    let mut item = String::new();
                    for c in group.chars() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                paths.push([prefix.clone(), segments(item.trim())].concat());
                                item.clear();
                                continue;
                            }
                            _ => {}
                        }
                        item.push(c);
                    }
                    paths.push([prefix.clone(), segments(item.trim())].concat());
                } else {
                    paths.push([prefix, segments(rest)].concat());
                }
            }
        }
        paths.retain(|path| !path.is_empty() && path != &["super"]);
        paths
    }

    /// The module graph of the library crate in `src`, one node per top-level module (a
    /// module's submodules are part of it; `crate` is the root's own code): an edge `a ->
    /// b` when code of `a` names an item of `b` by a `crate::` or `super::` path; and
    /// between the submodules of one module, an edge `a::x -> a::y` likewise. A submodule
    /// naming its parent is no edge: it is part of it. Comment lines and the `#[cfg(test)]`
    /// tail of a file (its test module) are not read.
    fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let files: Vec<PathBuf> = rust_files(src)
            .into_iter()
            .map(|file| file.strip_prefix(src).unwrap().to_owned())
            .filter(|file| file != Path::new("main.rs") && !file.starts_with("bin"))
            .collect();
        let modules: BTreeSet<String> = files.iter().map(|file| module_of(file)).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let from = module_of(file);
            let text = fs::read_to_string(src.join(file)).unwrap();
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let from_segments: Vec<&str> = from.split("::").collect();
            let mut paths = crate_paths(&code);
            if from == "crate" {
                // The root names its modules without `crate::` (`pub use state::AppState`).
                let relative = code.replace("crate::", "");
                let top_level: BTreeSet<&str> = modules
                    .iter()
                    .filter_map(|module| module.split("::").next())
                    .collect();
                for module in top_level {
                    let named = relative
                        .match_indices(&format!("{module}::"))
                        .any(|(at, _)| {
                            !relative[..at]
                                .chars()
                                .next_back()
                                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                        });
                    if named {
                        paths.push(vec![module.to_owned()]);
                    }
                }
            }
            for path in paths {
                let path: Vec<String> = if path[0] == "super" {
                    let parent = &from_segments[..from_segments.len().saturating_sub(1)];
                    parent
                        .iter()
                        .map(|segment| (*segment).to_owned())
                        .chain(path[1..].iter().cloned())
                        .collect()
                } else {
                    path
                };
                // The longest prefix of the path that is a module; none: the root.
                let to = (1..=path.len())
                    .rev()
                    .map(|length| path[..length].join("::"))
                    .find(|prefix| modules.contains(prefix))
                    .unwrap_or_else(|| "crate".to_owned());
                let to_segments: Vec<&str> = to.split("::").collect();
                let edge = if from_segments[0] != to_segments[0] {
                    Some((from_segments[0].to_owned(), to_segments[0].to_owned()))
                } else if from_segments.len() > 1
                    && to_segments.len() > 1
                    && from_segments[1] != to_segments[1]
                {
                    Some((from_segments[..2].join("::"), to_segments[..2].join("::")))
                } else {
                    None
                };
                if let Some((from, to)) = edge {
                    graph.entry(from).or_default().insert(to);
                }
            }
        }
        graph
    }

    /// A cycle of `graph` as its nodes (the first repeated at the end), if it has one.
    fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            done: &mut BTreeSet<String>,
            path: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            if let Some(start) = path.iter().position(|on_path| on_path == node) {
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_owned());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, graph, done, path) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(node.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
    }

    #[test]
    fn the_cycle_check_sees_cycles() {
        let graph = BTreeMap::from([
            ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
            ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
            ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
        ]);
        assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
        let paths = crate_paths(concat!(
            "use crate::{auth, observe::{x, y}};\n",
            "let a = crate::routes::jobs::chain(x);\n",
            "use super::*;",
        ));
        assert_eq!(
            paths,
            [
                vec!["auth".to_owned()],
                vec!["observe".to_owned()],
                vec!["routes".to_owned(), "jobs".to_owned(), "chain".to_owned()],
            ]
        );
    }

    /// The api crate's modules form no cycle (see [`module_graph`] for what an edge is): each
    /// has one job and can be read, and changed, after the modules it uses.
    #[test]
    fn api_modules_form_no_cycle() {
        let graph = module_graph(&root().join("bins/api/src"));
        for module in ["state", "observe", "metrics", "routes", "dto", "error"] {
            assert!(
                graph.contains_key(module) || graph.values().any(|to| to.contains(module)),
                "the module graph misses {module}: {graph:#?}"
            );
        }
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "module cycle in bins/api: {}\n{graph:#?}",
                cycle.join(" -> ")
            );
        }
    }

    fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        let Ok(entries) = fs::read_dir(dir) else {
            return files;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
        files
    }
}
