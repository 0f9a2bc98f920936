//! `cargo xtask package`: each library crate packages, the packages build, and their docs
//! (from the packages, every feature on) build without a warning.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{cargo, exec_to, root};

/// The crates other services embed: each packages, builds from its package, and its docs
/// build without a warning.
const LIBRARIES: [&str; 4] = ["jobs-core", "jobs-postgres", "jobs-sqlite", "blob-store"];

/// Every command's output goes to `log` (the terminal's when `None`).
pub(crate) fn run(log: Option<&std::fs::File>) -> Result<()> {
    // `--allow-dirty`: CI's clone is clean; locally the check should not need a commit.
    // `--no-verify`: cargo's own verification builds each package alone, resolving and
    // compiling its dependencies anew (sqlx's macros four times: 12 of a fresh CI run's
    // minutes); `check_packages` does the same check in one workspace instead.
    let mut package = cargo();
    package.args(["package", "--allow-dirty", "--no-verify"]);
    for library in LIBRARIES {
        package.args(["--package", library]);
    }
    exec_to(package, log)?;
    check_packages(log)
}

/// The packaged libraries compile from their packages, and their docs (every feature on)
/// build without a warning: the `.crate` files unpacked into one workspace (under the
/// target folder) whose `[patch.crates-io]` stands in for the libraries as they would be
/// published, then one `cargo check` and one `cargo doc` of that workspace, every feature
/// on. A file missing from a package fails the check. Checked together, the four share one
/// build of their dependencies, which the docs reuse: checked one by one, each with its own
/// features, they built the dependencies again for each, and the docs once more (over 10
/// minutes of a fresh 2-core machine, beside the tests). What that leaves unchecked: a
/// library that compiles only with a feature of a dependency that another one turns on.
fn check_packages(log: Option<&std::fs::File>) -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let packages = target.join("package");
    let workspace = target.join("package-check");
    if workspace.exists() {
        std::fs::remove_dir_all(&workspace)?;
    }
    std::fs::create_dir_all(&workspace)?;
    let mut members = Vec::new();
    let mut patches = String::new();
    for library in LIBRARIES {
        let version = package_version(library)?;
        let name = format!("{library}-{version}");
        // `-m`: the files get the time of the unpacking. A package stores one fixed time
        // for every file (so it is reproducible), and with it cargo took a changed library
        // for the one it had already checked and kept the old build.
        let mut unpack = Command::new("tar");
        unpack
            .arg("-mxzf")
            .arg(packages.join(format!("{name}.crate")))
            .arg("-C")
            .arg(&workspace);
        exec_to(unpack, log)?;
        members.push(format!("{name:?}"));
        patches.push_str(&format!("{library} = {{ path = {name:?} }}\n"));
    }
    std::fs::write(
        workspace.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = [{}]\n\n[patch.crates-io]\n{patches}",
            members.join(", ")
        ),
    )?;
    // The workspace's versions of every dependency, so the check builds what CI built.
    std::fs::copy(root().join("Cargo.lock"), workspace.join("Cargo.lock"))?;
    let manifest = workspace.join("Cargo.toml");
    let mut check = cargo();
    check
        .arg("check")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--workspace", "--all-features"]);
    exec_to(check, log)?;
    // The docs as docs.rs would build them from the packages, without a warning.
    let mut doc = cargo();
    doc.arg("doc")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    exec_to(doc, log)
}

/// A workspace crate's version, from its manifest.
fn package_version(library: &str) -> Result<String> {
    let manifest = std::fs::read_to_string(root().join("crates").join(library).join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|line| {
            let value = line
                .strip_prefix("version")?
                .trim_start()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .with_context(|| format!("no version in {library}'s Cargo.toml"))
}
