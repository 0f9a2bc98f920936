//! The `api` binary: refusal of unauthenticated public listeners, and a graceful stop of
//! `api --with-worker` on SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use api::server::Cli;
use clap::Parser;

use crate::support::eventually;

#[test]
fn a_public_listen_address_needs_a_token_or_an_explicit_opt_out() {
    let refused = Cli::try_parse_from(["api", "--listen", "0.0.0.0:8080"]).unwrap();
    let error = refused.check_listen().unwrap_err().to_string();
    assert!(
        error.contains("--api-token") && error.contains("--allow-unauthenticated"),
        "{error}"
    );
    for args in [
        vec!["api"],
        vec!["api", "--listen", "[::1]:9000"],
        vec![
            "api",
            "--listen",
            "0.0.0.0:8080",
            "--api-token",
            "0123456789abcdef",
        ],
        vec!["api", "--listen", "0.0.0.0:8080", "--allow-unauthenticated"],
    ] {
        Cli::try_parse_from(&args).unwrap().check_listen().unwrap();
    }
    let empty_token =
        Cli::try_parse_from(["api", "--listen", "10.0.0.1:80", "--api-token", ""]).unwrap();
    assert!(empty_token.check_listen().is_err());
}

#[test]
fn placeholder_and_short_tokens_are_refused_naming_the_rule() {
    let load = |args: &[&str]| {
        let mut cli = Cli::try_parse_from(args).unwrap();
        cli.load_token().map(|()| cli)
    };
    for placeholder in ["CHANGE-ME", "changeme", "token", "Secret"] {
        let error = load(&["api", "--api-token", placeholder]).unwrap_err();
        assert!(error.to_string().contains("is a placeholder"), "{error}");
    }
    let error = load(&["api", "--api-token", "short-token"]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has 11 characters, fewer than 16"),
        "{error}"
    );
    assert!(load(&["api", "--api-token", "0123456789abcdef"]).is_ok());

    // From a file: its first line, so that the token stays out of `ps`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "a-random-token-of-32-characters!\n").unwrap();
    let cli = load(&["api", "--api-token-file", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        cli.api_token.as_deref(),
        Some("a-random-token-of-32-characters!")
    );
    std::fs::write(&file, "CHANGE-ME\n").unwrap();
    let error = load(&["api", "--api-token-file", file.to_str().unwrap()]).unwrap_err();
    assert!(error.to_string().contains("is a placeholder"), "{error}");
    let error = load(&["api", "--api-token-file", "/no/such/token"]).unwrap_err();
    assert!(format!("{error:#}").contains("/no/such/token"), "{error:#}");

    // The metrics token, by the same rules.
    let error = load(&["api", "--metrics-token", "changeme"]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the metrics token \"changeme\" is a placeholder"),
        "{error}"
    );
    std::fs::write(&file, "a-metrics-token-of-32-characters\n").unwrap();
    let cli = load(&["api", "--metrics-token-file", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        cli.api_config().metrics_token.as_deref(),
        Some("a-metrics-token-of-32-characters")
    );
}

#[test]
fn the_flags_follow_the_specification() {
    let cli = Cli::try_parse_from(["api"]).unwrap();
    assert_eq!(cli.listen.to_string(), "127.0.0.1:8080");
    assert!(!cli.with_worker);
    assert_eq!(cli.common.database_url, "sqlite://folio-data/folio.db");
    let cli = Cli::try_parse_from([
        "api",
        "--with-worker",
        "--stale-after",
        "10s",
        "--max-attempts",
        "5",
    ])
    .unwrap();
    let config = cli.api_config();
    assert_eq!(config.recovery.stale_after, Duration::from_secs(10));
    assert_eq!(config.max_attempts, 5);
}

#[test]
fn the_binary_exits_with_a_clear_message_on_a_public_address_without_a_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_api"))
        .args(["--listen", "0.0.0.0:8080"])
        .env_remove("FOLIO_API_TOKEN")
        .env_remove("FOLIO_ALLOW_UNAUTHENTICATED")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:8080 without an API token"),
        "{stderr}"
    );
}

#[test]
fn the_binary_exits_at_start_on_a_placeholder_token_from_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_api"))
        .env("FOLIO_API_TOKEN", "CHANGE-ME")
        .env_remove("FOLIO_API_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("api: the API token \"CHANGE-ME\" is a placeholder"),
        "{stderr}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn api_with_worker_serves_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_api"))
        .args([
            "--with-worker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &format!("sqlite://{}/folio.db", dir.path().display()),
            "--storage",
            &format!("file://{}/objects", dir.path().display()),
            "--shutdown-grace",
            "2s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(60), "the api to be ready", || {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .ok()?;
            let body: serde_json::Value = response.json().await.ok()?;
            (body["live_workers"] == 1).then_some(body)
        }
    })
    .await;
    assert_eq!(ready["status"], "ready");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually(Duration::from_secs(30), "the api to exit", || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "{exit}: {stderr}");
    assert!(stderr.contains("api stopped"), "{stderr}");
}
