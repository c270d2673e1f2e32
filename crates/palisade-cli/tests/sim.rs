//! `palisade sim serve`, run as a process: the `listening on ADDR` line, the flags, and the API across a socket.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_core::{ErrorKind, GatewayRequest, OutcomeClass};
use palisade_sim::HttpGateway;

/// The server process, killed when the test ends.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["sim", "serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the palisade binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("a first line");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    let addr: SocketAddr = addr.parse().expect("an address");
    assert_ne!(addr.port(), 0, "the real port is printed");
    Server { child, addr }
}

fn charge(order: &str, key: &str) -> GatewayRequest {
    palisade_testkit::charge(order).amount("12.34").token("tok_visa").key(key).build()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn serves_charges_with_key_dedup_and_the_ledger() {
    let server = serve(&["--seed", "7", "--latency-ms", "1"]);
    let gw = HttpGateway::new(&format!("http://{}", server.addr)).unwrap().timeout(Duration::from_secs(5));
    runtime().block_on(async {
        let a = gw.send(charge("o1", "k1")).await.unwrap();
        let b = gw.send(charge("o1", "k1")).await.unwrap();
        assert_eq!(a, b);
    });
    // The ledger, read with a plain socket.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /v1/_sim/ledger HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n").unwrap();
    let mut res = String::new();
    s.read_to_string(&mut res).unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let rows: serde_json::Value = serde_json::from_str(res.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["op"], "charge");
    assert_eq!(rows[0]["order_id"], "o1");
    assert_eq!(rows[0]["amount"], "12.34");
    assert_eq!(rows[0]["currency"], "USD");
    assert!(rows[0]["id"].as_str().unwrap().starts_with("ch_"));
}

#[test]
fn fault_flags_take_effect() {
    let server = serve(&["--fault", "rate_limited=1", "--retry-after-secs", "2"]);
    let gw = HttpGateway::new(&format!("http://{}", server.addr)).unwrap();
    let e = runtime().block_on(gw.send(charge("o1", "k1"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));

    let server = serve(&["--fault", "lost_response=1.0"]);
    let gw = HttpGateway::new(&format!("http://{}", server.addr)).unwrap();
    let e = runtime().block_on(gw.send(charge("o1", "k1"))).unwrap_err();
    assert_eq!(e.outcome().class(), OutcomeClass::Unknown, "{e:?}");
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [&["--fault", "bogus=0.1"][..], &["--fault", "timeout=2"], &["--fault", "timeout"], &["--seed", "x"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["sim", "serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["sim", "serve", "--addr", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}
