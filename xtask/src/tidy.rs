//! Tidy checks of the workspace's invariants, run by `cargo test`: a green local run is a
//! green CI.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
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
    const CORE_AND_DOMAIN_CRATES: [&str; 6] = [
        "jobs-core",
        "page-jobs",
        "books",
        "chat-client",
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
            assert!(
                text.trim_start().starts_with("//!"),
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
