//! [`StallProxy`]: a TCP proxy in front of Redis that can hold the bytes going to Redis, so a test can make a
//! store call time out and then see what happens when Redis executes it later (the "stalled Redis" of an
//! unlucky production: a long fork, a slow disk, a paused VM).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to a Redis server that forwards bytes both ways until [`stall`](StallProxy::stall)ed: from then
/// on, what the client sends is held (read, not forwarded) until [`resume`](StallProxy::resume), which forwards
/// everything held, in order. Answers from Redis always pass. Connections made while stalled are accepted and
/// held the same way.
///
/// The proxy runs on the runtime of the test that starts it and stops with it.
///
/// ```no_run
/// # async fn t() {
/// let Some(r) = palisade_testkit::redis("stalled").await else { return };
/// let proxy = palisade_testkit::StallProxy::start(&r.url).await;
/// let client = redis::Client::open(proxy.url()).unwrap(); // point the store under test here
/// proxy.stall();   // its calls now time out...
/// proxy.resume();  // ...and are executed by Redis now, late
/// # }
/// ```
#[derive(Debug)]
pub struct StallProxy {
    addr: SocketAddr,
    url_tail: String,
    stalled: watch::Sender<bool>,
}

impl StallProxy {
    /// Starts a proxy on `127.0.0.1` (a free port) to the Redis server of `redis_url`
    /// (`redis://[user:pass@]host:port[/db]`).
    ///
    /// # Panics
    /// When the URL cannot be read or no local port can be bound: a test set-up failure.
    pub async fn start(redis_url: &str) -> StallProxy {
        let rest = redis_url.strip_prefix("redis://").unwrap_or_else(|| panic!("not a redis:// URL: {redis_url}"));
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (format!("{auth}@"), rest),
            None => (String::new(), rest),
        };
        let (host_port, db) = match rest.split_once('/') {
            Some((hp, db)) => (hp, format!("/{db}")),
            None => (rest, String::new()),
        };
        let upstream = host_port.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind a proxy port: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("proxy address: {e}"));
        let (stalled, watch) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    pipe(client, server, watch).await;
                });
            }
        });
        StallProxy { addr, url_tail: format!("{auth}{db}"), stalled }
    }

    /// The URL to give the client under test: `redis://127.0.0.1:PORT` (with the original credentials and
    /// database, if any).
    #[must_use]
    pub fn url(&self) -> String {
        match self.url_tail.split_once('@') {
            Some((auth, db)) => format!("redis://{auth}@{}{db}", self.addr),
            None => format!("redis://{}{}", self.addr, self.url_tail),
        }
    }

    /// The proxy's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, hold what clients send to Redis.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forward everything held, in order, and stop holding.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

/// Copies both ways; the client-to-Redis direction waits while stalled before writing what it read.
async fn pipe(client: TcpStream, server: TcpStream, mut stalled: watch::Receiver<bool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_server = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // Hold before reading as well, so even the first bytes of a stalled connection wait.
            if stalled.wait_for(|s| !*s).await.is_err() {
                return;
            }
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if stalled.wait_for(|s| !*s).await.is_err() || server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let to_client = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    // Either side closing ends the connection.
    tokio::select! {
        () = to_server => {}
        () = to_client => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn holds_commands_while_stalled_and_delivers_them_on_resume() {
        let Some(r) = crate::redis("testkit_stall_proxy").await else { return };
        let proxy = StallProxy::start(&r.url).await;
        let client = redis::Client::open(proxy.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = r.key("late");
        let _: () = redis::cmd("SET").arg(&key).arg("before").query_async(&mut conn).await.unwrap();

        proxy.stall();
        let mut late = conn.clone();
        let late_key = key.clone();
        let pending =
            tokio::spawn(
                async move { redis::cmd("SET").arg(&late_key).arg("after").query_async::<()>(&mut late).await },
            );
        // While stalled, Redis has not seen the write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut direct = r.conn.clone();
        let seen: String = redis::cmd("GET").arg(&key).query_async(&mut direct).await.unwrap();
        assert_eq!(seen, "before");
        assert!(!pending.is_finished());

        proxy.resume();
        pending.await.unwrap().unwrap();
        let seen: String = redis::cmd("GET").arg(&key).query_async(&mut direct).await.unwrap();
        assert_eq!(seen, "after");
        r.cleanup().await;
    }

    #[test]
    fn keeps_credentials_and_database_in_the_url() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let p = StallProxy::start("redis://user:pw@127.0.0.1:6379/3").await;
            assert_eq!(p.url(), format!("redis://user:pw@{}/3", p.addr()));
            let p = StallProxy::start("redis://127.0.0.1:6379").await;
            assert_eq!(p.url(), format!("redis://{}", p.addr()));
        });
    }
}
