//! A fault-injecting TCP proxy on loopback, between datamon and a store server.
//!
//! Each new connection may, at random, **fail** (closed at once, or closed after the request
//! reached the server but before any of the response came back, so the client cannot tell
//! whether its request took effect) or **stall** (accepted, then nothing: the client's timeouts
//! must fire). The proxy can also be taken **down** (its port closed, every open connection
//! cut, so connections are refused like a stopped server), by hand or automatically once a
//! number of request bytes went through, and brought back up on the same port.
//!
//! Clients should not pool connections (e.g. `pool_max_idle_per_host = 0`) so that the fault
//! rates apply per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// Fault rates of new connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability (0..1) that a connection fails.
    pub fail: f64,
    /// Probability (0..1) that a connection stalls.
    pub stall: f64,
    /// How long a stalled connection is held before it is closed.
    pub stall_for: Duration,
}

/// What the proxy did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections failed on purpose.
    pub failed: u64,
    /// Connections stalled on purpose.
    pub stalled: u64,
    /// Bytes forwarded from clients to the server.
    pub bytes_up: u64,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    down: watch::Sender<bool>,
    down_after_bytes: AtomicU64,
    cut_next: AtomicU64,
    connections: AtomicU64,
    failed: AtomicU64,
    stalled: AtomicU64,
    bytes_up: AtomicU64,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    path: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `endpoint`
    /// (`http://127.0.0.1:PORT[/path]`), with no faults.
    pub async fn start(endpoint: &str) -> FaultProxy {
        let rest = endpoint
            .strip_prefix("http://")
            .expect("an http:// endpoint");
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, String::new()),
        };
        let upstream: SocketAddr = tokio::net::lookup_host(hostport)
            .await
            .expect("resolve the upstream")
            .find(SocketAddr::is_ipv4)
            .expect("an IPv4 upstream");
        let listener = listen("127.0.0.1:0".parse().expect("an address")).expect("bind");
        let addr = listener.local_addr().expect("a local address");
        let (down, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            down,
            down_after_bytes: AtomicU64::new(u64::MAX),
            cut_next: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, addr, shared.clone()));
        FaultProxy {
            addr,
            path,
            shared,
            task,
        }
    }

    /// The endpoint to give clients: `http://127.0.0.1:PORT` plus the upstream's path.
    pub fn endpoint(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Sets the fault rates of new connections.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("not poisoned") = faults;
    }

    /// Takes the proxy down (port closed, connections cut) or brings it back up (which also
    /// cancels [`FaultProxy::down_after_upload_bytes`]). Returns once the port is open again.
    pub async fn set_down(&self, down: bool) {
        if !down {
            self.shared
                .down_after_bytes
                .store(u64::MAX, Ordering::SeqCst);
        }
        self.shared.down.send_replace(down);
        if !down {
            for _ in 0..200 {
                if TcpStream::connect(self.addr).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Whether the proxy is down.
    pub fn is_down(&self) -> bool {
        *self.shared.down.borrow()
    }

    /// Cuts the next `n` connections once the server has answered (so their requests took
    /// effect but the client never learns it).
    pub fn cut_next_responses(&self, n: u64) {
        self.shared.cut_next.store(n, Ordering::SeqCst);
    }

    /// Goes down by itself once `bytes` more request bytes have gone through.
    pub fn down_after_upload_bytes(&self, bytes: u64) {
        let now = self.shared.bytes_up.load(Ordering::SeqCst);
        self.shared
            .down_after_bytes
            .store(now.saturating_add(bytes), Ordering::SeqCst);
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections: s.connections.load(Ordering::SeqCst),
            failed: s.failed.load(Ordering::SeqCst),
            stalled: s.stalled.load(Ordering::SeqCst),
            bytes_up: s.bytes_up.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.down.send_replace(true);
        self.task.abort();
    }
}

async fn accept_loop(first: tokio::net::TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut listener = Some(first);
    let mut down_rx = shared.down.subscribe();
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => {
                if down_rx.wait_for(|d| !*d).await.is_err() {
                    return;
                }
                match listen(addr) {
                    Ok(l) => l,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        loop {
            tokio::select! {
                r = l.accept() => {
                    if let Ok((client, _)) = r {
                        tokio::spawn(handle(client, shared.clone()));
                    }
                }
                r = down_rx.wait_for(|d| *d) => {
                    if r.is_err() { return; }
                    break;
                }
            }
        }
        drop(l);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    DropAtOnce,
    DropResponse,
    Stall,
}

async fn handle(mut client: TcpStream, shared: Arc<Shared>) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let faults = *shared.faults.lock().expect("not poisoned");
    let r: f64 = rand::random();
    let cut = shared
        .cut_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let mode = if cut {
        shared.failed.fetch_add(1, Ordering::SeqCst);
        Mode::DropResponse
    } else if r < faults.fail {
        shared.failed.fetch_add(1, Ordering::SeqCst);
        if rand::random::<bool>() {
            Mode::DropAtOnce
        } else {
            Mode::DropResponse
        }
    } else if r < faults.fail + faults.stall {
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        Mode::Stall
    } else {
        Mode::Pass
    };
    let mut down_rx = shared.down.subscribe();
    match mode {
        Mode::DropAtOnce => return,
        Mode::Stall => {
            tokio::select! {
                _ = tokio::time::sleep(faults.stall_for) => {}
                _ = down_rx.wait_for(|d| *d) => {}
            }
            return;
        }
        Mode::Pass | Mode::DropResponse => {}
    }
    let Ok(mut server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    client.set_nodelay(true).ok();
    server.set_nodelay(true).ok();
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let total = shared.bytes_up.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if total >= shared.down_after_bytes.load(Ordering::SeqCst) {
                shared.down.send_replace(true);
            }
        }
        sw.shutdown().await.ok();
    };
    let down = async {
        if mode == Mode::DropResponse {
            // Wait until the server answers (so it has acted on the request), then cut.
            let mut b = [0u8; 1];
            let _answered = sr.read(&mut b).await;
            return;
        }
        tokio::io::copy(&mut sr, &mut cw).await.ok();
        cw.shutdown().await.ok();
    };
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            _ = &mut up, if !up_done => up_done = true,
            _ = &mut down, if !down_done => {
                down_done = true;
                if mode == Mode::DropResponse { break; }
            }
            _ = down_rx.wait_for(|d| *d) => break,
        }
        if up_done && down_done {
            break;
        }
    }
}
