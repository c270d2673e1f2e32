//! The example server as a real process, for the tests that need one (tests/server_checkouts.rs,
//! tests/server_postgres.rs, tests/chaos.rs) and for the chaos example: the binary, built once per run, and a
//! start that waits for it to listen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server binary, built once per test run by `cargo build --example server` (a no-op when `cargo test`
/// already built it) and located through cargo's JSON messages.
pub fn server_binary() -> PathBuf {
    example_binary("server", false)
}

/// The binary of the example `name`, built once per process by `cargo build --example NAME` (with `--release`
/// when `release`) and located through cargo's JSON messages.
///
/// # Panics
/// When cargo cannot build it.
pub fn example_binary(name: &str, release: bool) -> PathBuf {
    static BINS: OnceLock<Mutex<HashMap<(String, bool), PathBuf>>> = OnceLock::new();
    let mut bins = BINS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bin) = bins.get(&(name.to_owned(), release)) {
        return bin.clone();
    }
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args(["build", "--example", name, "--message-format=json"]);
    if release {
        cargo.arg("--release");
    }
    let out = cargo.current_dir(env!("CARGO_MANIFEST_DIR")).stderr(Stdio::inherit()).output().expect("cargo runs");
    assert!(out.status.success(), "cargo build --example {name} failed");
    let bin = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reports the {name} example's executable"));
    bins.insert((name.to_owned(), release), bin.clone());
    bin
}

/// Starts the server on a free port with `args` (and `secret` as its webhook secret), waits up to 60 s for its
/// "listening on" line, and returns it (killed when dropped) with its address. Its output keeps being drained, so
/// it never blocks on a full pipe.
pub async fn start_server(args: &[&str], secret: &str) -> (Child, SocketAddr) {
    let bin = tokio::task::spawn_blocking(server_binary).await.unwrap();
    spawn_server(&bin, args, secret, None).await.unwrap_or_else(|e| panic!("{e}"))
}

/// [`start_server`] with the binary `bin`, and its output (the rest of stdout, where its log goes, and stderr)
/// appended to the file `log` when given (inherited stderr, drained stdout otherwise); an error instead of a
/// panic when it does not listen.
pub async fn spawn_server(
    bin: &Path,
    args: &[&str],
    secret: &str,
    log: Option<&Path>,
) -> anyhow::Result<(Child, SocketAddr)> {
    let file = match log {
        Some(path) => Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    let stderr = match &file {
        Some(f) => Stdio::from(f.try_clone()?),
        None => Stdio::inherit(),
    };
    let mut child = Command::new(bin)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env("PALISADE_WEBHOOK_SECRET", secret)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("the server {} does not start: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("the server's stdout is piped"))?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return Ok(rest.split_whitespace().next().unwrap_or_default().parse::<SocketAddr>()?);
            }
        }
        anyhow::bail!("the server exited before listening")
    };
    let addr = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .map_err(|_| anyhow::anyhow!("the server did not listen within 60 s"))??;
    let mut file = file.map(tokio::fs::File::from_std);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(f) = file.as_mut() {
                let _ = tokio::io::AsyncWriteExt::write_all(f, format!("{line}\n").as_bytes()).await;
            }
        }
    });
    Ok((child, addr))
}
