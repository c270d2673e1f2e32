//! Issue 16, finding 16, against the real listener of examples/server on a socket: half-sent requests are cut
//! off by the header and body read timeouts and cannot hold every connection, so a normal request still gets
//! its answer; a body sent a byte at a time is cut off at the body deadline; an idle kept-alive connection is
//! closed. Real time with short limits (well under two seconds each).

#[path = "../examples/server/app.rs"]
mod app;
#[path = "../examples/server/charges.rs"]
mod charges;
#[path = "../examples/server/ledger.rs"]
mod ledger;
#[path = "../examples/server/serve.rs"]
mod serve;

use std::time::Duration;

use palisade::idempotency::MemoryStore;
use palisade::sim::GatewaySim;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: serve::Limits = serve::Limits {
    header_timeout: Duration::from_millis(300),
    body_timeout: Duration::from_millis(300),
    max_connections: 4,
};

async fn start() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app::router(GatewaySim::new(), MemoryStore::new());
    tokio::spawn(serve::serve(listener, app, LIMITS));
    addr
}

const BODY: &str = r#"{"amount":"12.34","currency":"USD","source":"tok_visa","order_id":"o-slow"}"#;

fn full_request(key: &str) -> String {
    format!(
        "POST /v1/charges HTTP/1.1\r\nHost: test\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
}

/// Reads until the server closes the connection (or `limit` passes), returning what arrived.
async fn read_all(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    read.ok().map(|_| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn half_sent_requests_do_not_starve_a_normal_one() {
    let addr = start().await;
    // More half-sent requests than the server has connections: heads that never end.
    let mut slow = Vec::new();
    for _ in 0..(LIMITS.max_connections * 2) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /v1/charges HTTP/1.1\r\nHost: test\r\n").await.unwrap();
        slow.push(s);
    }
    // A normal client still gets its charge: the slow ones are cut off after the header timeout.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(full_request("k-normal").as_bytes()).await.unwrap();
    let answer = read_all(&mut client, Duration::from_secs(5)).await.expect("the normal request is answered");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // Every half-sent connection was closed by the server.
    for s in &mut slow {
        assert!(read_all(s, Duration::from_secs(2)).await.is_some(), "a half-sent request's connection is closed");
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_is_cut_off() {
    let addr = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = "POST /v1/charges HTTP/1.1\r\nHost: test\r\nIdempotency-Key: k-body\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n{\"amount\":";
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_all(&mut s, Duration::from_secs(2)).await.expect("the server ends the request");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The key was not used up by the cut-off request: the full request with it charges.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(full_request("k-body").as_bytes()).await.unwrap();
    let answer = read_all(&mut client, Duration::from_secs(2)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

/// The body timeout is a deadline for the whole body, not for each read: a client that sends a byte every 100 ms
/// (each read well inside the 300 ms limit) is still cut off, instead of holding the connection for as long as
/// its body lasts.
#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_cut_off_at_the_deadline() {
    let addr = start().await;
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let head = format!(
        "POST /v1/charges HTTP/1.1\r\nHost: test\r\nIdempotency-Key: k-drip\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        BODY.len()
    );
    write.write_all(head.as_bytes()).await.unwrap();
    // About 8 s of body at this pace: far past the deadline.
    let drip = tokio::spawn(async move {
        for b in BODY.bytes() {
            if write.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(2), read.read_to_end(&mut out)).await;
    drip.abort();
    let answer = String::from_utf8_lossy(&out);
    assert!(answered.is_ok(), "the dribbled body still held the connection after {:?}: {answer}", started.elapsed());
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// The header timeout also closes a kept-alive connection that sends no next request: an idle connection does
/// not hold a slot for ever.
#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let addr = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let keep_alive = full_request("k-idle").replace("Connection: close\r\n", "");
    s.write_all(keep_alive.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let answer = read_all(&mut s, Duration::from_secs(2)).await.expect("the idle connection is closed");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(started.elapsed() >= LIMITS.header_timeout, "closed after the timeout, not at once");
}
