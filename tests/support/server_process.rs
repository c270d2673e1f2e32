//! The example server as a real process, for the tests that need one (tests/server_checkouts.rs,
//! tests/server_postgres.rs): the binary, built once per test run, and a start that waits for it to listen.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server binary, built once per test run by `cargo build --example server` (a no-op when `cargo test`
/// already built it) and located through cargo's JSON messages.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "server", "--message-format=json"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "cargo build --example server failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "server")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the server example's executable")
    })
    .clone()
}

/// Starts the server on a free port with `args` (and `secret` as its webhook secret), waits up to 60 s for its
/// "listening on" line, and returns it (killed when dropped) with its address. Its output keeps being drained, so
/// it never blocks on a full pipe.
pub async fn start_server(args: &[&str], secret: &str) -> (Child, SocketAddr) {
    let bin = tokio::task::spawn_blocking(server_binary).await.unwrap();
    let mut child = Command::new(bin)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env("PALISADE_WEBHOOK_SECRET", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let wait = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap();
            }
        }
        panic!("the server exited before listening");
    };
    let addr = tokio::time::timeout(Duration::from_secs(60), wait).await.expect("the server listens within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}
