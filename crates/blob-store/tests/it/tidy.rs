//! Tidy checks of the workspace, run by `cargo test`: the AWS SDK stays inside blob-store
//! (and the application assembly); other crates use blob-store without its `s3` feature.

use std::process::Command;

/// Workspace packages allowed to name AWS SDK crates as direct dependencies: this crate,
/// and the application assembly and binaries that pick concrete stores.
const ALLOWED: &[&str] = &["blob-store", "app", "api", "worker"];

fn is_aws_sdk_crate(name: &str) -> bool {
    name.starts_with("aws-sdk-")
        || name.starts_with("aws-smithy-")
        || matches!(
            name,
            "aws-config" | "aws-types" | "aws-credential-types" | "aws-runtime" | "aws-sigv4"
        )
}

#[test]
fn no_workspace_package_but_blob_store_and_the_app_reaches_the_aws_sdk() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages array");
    assert!(
        packages
            .iter()
            .any(|package| package["name"] == "blob-store"),
        "blob-store is a workspace member"
    );
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        if ALLOWED.contains(&name) {
            continue;
        }
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let dependency_name = dependency["name"].as_str().unwrap_or_default();
            if is_aws_sdk_crate(dependency_name) {
                violations.push(format!("{name} depends on {dependency_name}"));
            }
            // Through blob-store, only test builds may turn the S3 backend on.
            let is_normal = dependency["kind"].is_null();
            let features: Vec<&str> = dependency["features"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|feature| feature.as_str())
                .collect();
            if dependency_name == "blob-store"
                && is_normal
                && features
                    .iter()
                    .any(|feature| ["s3", "conformance"].contains(feature))
            {
                violations.push(format!("{name} turns on blob-store features {features:?}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the AWS SDK must stay inside blob-store (domain crates see only `dyn BlobStore`): {violations:?}"
    );
}

#[test]
fn the_aws_sdk_detector_recognises_sdk_crates_and_nothing_else() {
    for name in [
        "aws-sdk-s3",
        "aws-config",
        "aws-smithy-http-client",
        "aws-types",
    ] {
        assert!(is_aws_sdk_crate(name), "{name}");
    }
    for name in ["blob-store", "awsome", "tokio", "aws-lc-rs"] {
        assert!(!is_aws_sdk_crate(name), "{name}");
    }
}
