//! The deployment files in `deploy/`: the systemd units pass `systemd-analyze verify` (and
//! keep their hardening), and the example environment file names every setting of both
//! binaries and nothing else.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{api_binary, worker_binary};

/// Where the units run the binaries (docs/deploy.md installs them there).
const API_PATH: &str = "/usr/local/bin/folio-api";
const WORKER_PATH: &str = "/usr/local/bin/folio-worker";
const API_UNIT: &str = "folio-api.service";
const WORKER_TEMPLATE: &str = "folio-worker@.service";
/// `systemd-analyze security` exposure (0-100, shown as 0.0-10.0) the units stay under.
const MAX_EXPOSURE: &str = "30";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Copies the units into a temporary folder with `ExecStart=` naming the binaries cargo
/// built (`verify` checks that the command exists and is executable).
fn units_with_built_binaries() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (unit, installed, built) in [
        (API_UNIT, API_PATH, api_binary()),
        (WORKER_TEMPLATE, WORKER_PATH, worker_binary()),
    ] {
        let text = fs::read_to_string(deploy_dir().join("systemd").join(unit)).unwrap();
        let exec_start = format!("ExecStart={installed}");
        assert!(
            text.lines().any(|line| line.starts_with(&exec_start)),
            "{unit} runs {installed}, as docs/deploy.md installs it"
        );
        let text = text.replace(&exec_start, &format!("ExecStart={}", built.display()));
        fs::write(dir.path().join(unit), text).unwrap();
    }
    dir
}

/// Runs `systemd-analyze ARGS`: its output; fails the test when the tool is missing.
fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "systemd-analyze does not run ({error}): install Debian's `systemd` package \
                 (apt-get install systemd)"
            )
        })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let dir = units_with_built_binaries();
    let api = dir.path().join(API_UNIT).display().to_string();
    // An instance of the template (the file itself is found beside it).
    let worker = dir
        .path()
        .join("folio-worker@1.service")
        .display()
        .to_string();
    // --recursive-errors=no: the exit status says whether our units have a warning, not the
    // host's units they name (network-online.target); --man=no: no man pages to look up.
    let output = systemd_analyze(&["verify", "--man=no", "--recursive-errors=no", &api, &worker]);
    let said = text(&output);
    eprintln!("systemd-analyze verify: {}\n{said}", output.status);
    // Anything about our files is a finding, whatever the exit status.
    let ours: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("folio-"))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify found problems in the units ({}):\n{}",
        output.status,
        ours.join("\n")
    );

    for unit in [&api, &worker] {
        let threshold = format!("--threshold={MAX_EXPOSURE}");
        let output = systemd_analyze(&["security", "--offline=yes", &threshold, unit]);
        let said = text(&output);
        let overall = said
            .lines()
            .find(|line| line.contains("Overall exposure level"))
            .unwrap_or("no overall exposure level");
        eprintln!("{overall}");
        assert!(
            output.status.success(),
            "{unit}: exposure over {MAX_EXPOSURE} ({}):\n{said}",
            output.status
        );
    }
}

/// The environment variables `binary --help` lists (`[env: NAME=...]`).
fn env_names(binary: &Path) -> BTreeSet<String> {
    let output = Command::new(binary)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    // Help text wraps lines: one space between words.
    let help = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_example_environment_file_names_every_setting_and_nothing_else() {
    let example = fs::read_to_string(deploy_dir().join("folio.env.example")).unwrap();
    // `NAME=` at a line's start, set or commented out.
    let named: BTreeSet<String> = example
        .lines()
        .map(|line| line.trim_start_matches('#'))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    let mut accepted = env_names(&api_binary());
    accepted.extend(env_names(&worker_binary()));
    assert!(
        accepted.contains("DATABASE_URL") && accepted.contains("FOLIO_METRICS_LISTEN"),
        "the help of both binaries was read: {accepted:?}"
    );
    let missing: Vec<&String> = accepted.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "deploy/folio.env.example lacks {missing:?}"
    );
    let unknown: Vec<&String> = named
        .iter()
        .filter(|name| !accepted.contains(*name))
        // Read by the AWS SDK and the logger, not by a flag.
        .filter(|name| !name.starts_with("AWS_") && name.as_str() != "RUST_LOG")
        .collect();
    assert!(
        unknown.is_empty(),
        "deploy/folio.env.example names settings no binary reads: {unknown:?}"
    );
}
