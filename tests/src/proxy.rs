//! A user-space TCP fault-injection proxy for the fault suite of lockkit.
//!
//! [`FaultProxy`] listens on `127.0.0.1` (a free port) and forwards every
//! accepted connection to one fixed upstream address: a real Redis,
//! Postgres, MariaDB, etcd (gRPC) or ZooKeeper server started by the
//! fixtures. A lock client is pointed at the proxy instead of the server,
//! and the test switches faults on and off at any time, also while
//! connections are open:
//!
//! - **delay** ([`FaultProxy::set_delay`]): every chunk, in both
//!   directions, is held for a fixed time before it is forwarded. Order is
//!   kept per direction and chunks are pipelined (a stream of chunks each
//!   delayed by one second arrives about one second late, not `n` seconds
//!   late): slow networks, renewals that come in late, leases that expire
//!   while a reply is in flight.
//! - **refuse** ([`FaultProxy::set_refuse`]): new connections are reset
//!   right after accept: a server that is down or unreachable for clients
//!   that (re)connect, while established connections keep working.
//! - **blackhole** ([`FaultProxy::set_blackhole`]): connections stay open
//!   but nothing gets through in either direction, not even a close: a
//!   network partition, where neither side learns that the other is gone
//!   and only timeouts, keep-alives and lease expiry can tell.
//! - **cut** ([`FaultProxy::cut`]): every open connection is closed now,
//!   with a reset on both sides, mid-stream: a crashed server, a broken
//!   link, a restarted load balancer.
//! - **lost replies** ([`FaultProxy::set_lose_replies`]): requests are
//!   forwarded and executed by the server, but its replies are thrown
//!   away: the ambiguous write, where a client cannot tell whether its
//!   acquire, renewal or release took effect.
//!
//! [`FaultProxy::pass`] goes back to plain forwarding, and
//! [`FaultProxy::stats`] / [`FaultProxy::wait_for`] let a test wait for
//! what the proxy has seen (connections, forwarded and discarded bytes)
//! instead of sleeping and hoping.
//!
//! The proxy runs on the tokio runtime that starts it. Dropping the last
//! handle (or [`FaultProxy::shutdown`]) stops the listener and closes all
//! connections, so no task outlives the proxy.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most bytes read (and forwarded) at once.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction before reading pauses (back-pressure
/// while a delay holds them).
const QUEUE: usize = 256;
/// How often [`FaultProxy::wait_for`] looks at the stats.
const POLL: Duration = Duration::from_millis(5);

/// Counters of what a [`FaultProxy`] has seen so far, from
/// [`FaultProxy::stats`]. Each counter is read on its own (the snapshot is
/// not atomic across counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted in total, refused ones included.
    pub accepted: u64,
    /// Connections currently open (accepted, not refused, not yet closed).
    pub open: u64,
    /// Connections closed by [`FaultProxy::cut`].
    pub cut: u64,
    /// Connections closed right after accept because refuse was on.
    pub refused: u64,
    /// Client-to-server bytes forwarded (written to the server).
    pub bytes_up: u64,
    /// Server-to-client bytes forwarded (written to the client).
    pub bytes_down: u64,
    /// Client-to-server bytes discarded (blackhole).
    pub dropped_up: u64,
    /// Server-to-client bytes discarded (blackhole or lost replies).
    pub dropped_down: u64,
}

/// The switches, all changed together through one watch channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    delay: Duration,
    reply_delay: Duration,
    blackhole: bool,
    refuse: bool,
    lose_replies: bool,
}

impl Faults {
    /// How long a chunk going in `dir` is held.
    fn delay(&self, dir: Direction) -> Duration {
        match dir {
            Direction::Down => self.delay + self.reply_delay,
            Direction::Up => self.delay,
        }
    }

    /// Whether bytes going in `dir` are thrown away.
    fn discards(&self, dir: Direction) -> bool {
        self.blackhole || (dir == Direction::Down && self.lose_replies)
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    cut: AtomicU64,
    refused: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    dropped_up: AtomicU64,
    dropped_down: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The direction of a pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// State shared by the handle, the listener task and the connection
/// tasks.
struct Shared {
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    counters: Counters,
    /// The open connections, by id: cancelling a token cuts its connection.
    conns: Mutex<HashMap<u64, CancellationToken>>,
    next_id: AtomicU64,
    /// Cancelled when the proxy shuts down; every connection token is a
    /// child of it.
    shutdown: CancellationToken,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // The map stays consistent even if a holder panicked.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            accepted: get(&c.accepted),
            open: get(&c.open),
            cut: get(&c.cut),
            refused: get(&c.refused),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            dropped_up: get(&c.dropped_up),
            dropped_down: get(&c.dropped_down),
        }
    }

    fn forwarded(&self, dir: Direction, n: usize) {
        let counter = match dir {
            Direction::Up => &self.counters.bytes_up,
            Direction::Down => &self.counters.bytes_down,
        };
        add(counter, n as u64);
    }

    fn dropped(&self, dir: Direction, n: usize) {
        let counter = match dir {
            Direction::Up => &self.counters.dropped_up,
            Direction::Down => &self.counters.dropped_down,
        };
        add(counter, n as u64);
    }
}

/// The part behind the user's handles: dropping it shuts the proxy down.
struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// A TCP proxy in front of one upstream server that injects faults on
/// demand (see the [module docs](self)).
///
/// Clones are handles to the same proxy; when the last one is dropped the
/// proxy shuts down (as with [`shutdown`](Self::shutdown)).
#[derive(Clone)]
pub struct FaultProxy {
    inner: Arc<Handle>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("FaultProxy")
            .field("addr", &self.inner.addr)
            .field("upstream", &shared.upstream)
            .field("faults", &shared.faults())
            .field("stats", &shared.stats())
            .field("shut_down", &shared.shutdown.is_cancelled())
            .finish()
    }
}

impl FaultProxy {
    /// Starts listening on `127.0.0.1:0` (a free port) and forwarding every
    /// accepted connection to `upstream`, with no fault switched on. The
    /// proxy's tasks are spawned on the current tokio runtime and end when
    /// the proxy shuts down (or with the runtime).
    ///
    /// # Panics
    /// When not called within a tokio runtime, or when no listening socket
    /// can be bound on `127.0.0.1`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("fault proxy: bind a listening socket on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("fault proxy: the address of the listening socket");
        let (faults, _) = watch::channel(Faults::default());
        let shared = Arc::new(Shared {
            upstream,
            faults,
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FaultProxy {
            inner: Arc::new(Handle { shared, addr }),
        }
    }

    /// The address the proxy listens on (`127.0.0.1:<port>`): give it to
    /// the client instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.inner.addr.port()
    }

    /// The server address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.shared.upstream
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn modify(&self, change: impl FnOnce(&mut Faults)) {
        self.shared().faults.send_modify(change);
    }

    /// Holds every chunk, in both directions, for `delay` before forwarding
    /// it (a close too); order is kept per direction and chunks are
    /// pipelined (reading goes on while earlier chunks wait).
    /// [`Duration::ZERO`] switches the delay off. The new delay applies to chunks read after the call; a
    /// chunk already waiting keeps the delay it was read with.
    pub fn set_delay(&self, delay: Duration) {
        self.modify(|f| f.delay = delay);
    }

    /// Holds server-to-client chunks only, for `delay` (on top of any
    /// [`set_delay`](Self::set_delay)): requests arrive at once, their
    /// replies late — the window in which a request has been applied but
    /// its client does not know yet.
    pub fn set_reply_delay(&self, delay: Duration) {
        self.modify(|f| f.reply_delay = delay);
    }

    /// Switches the blackhole on or off. While it is on, connections stay
    /// open but every byte read in either direction is discarded silently
    /// (counted in [`ProxyStats::dropped_up`] / [`ProxyStats::dropped_down`]),
    /// including chunks still waiting out a delay, and a close (EOF) from
    /// either side is held back until the blackhole is switched off. New
    /// connections are still accepted and connected upstream, and are just
    /// as silent.
    pub fn set_blackhole(&self, on: bool) {
        self.modify(|f| f.blackhole = on);
    }

    /// Switches refusing on or off. While it is on, new connections are
    /// closed with a reset right after accept (counted in
    /// [`ProxyStats::refused`]), without connecting upstream; open
    /// connections are not affected.
    pub fn set_refuse(&self, on: bool) {
        self.modify(|f| f.refuse = on);
    }

    /// Switches lost replies (the ambiguous write) on or off. While it is
    /// on, client-to-server bytes are forwarded as usual but server-to-client
    /// bytes are discarded (counted in [`ProxyStats::dropped_down`]). A close
    /// from the server is still forwarded.
    pub fn set_lose_replies(&self, on: bool) {
        self.modify(|f| f.lose_replies = on);
    }

    /// Cuts every open connection now: both its sockets are closed with
    /// `SO_LINGER` 0, so the client and the server each get a reset, and
    /// [`ProxyStats::cut`] counts them (already when this returns; `open`
    /// drops once the connection tasks have closed the sockets). New
    /// connections are accepted normally afterwards, unless refuse is on.
    pub fn cut(&self) {
        let shared = self.shared();
        let tokens: Vec<CancellationToken> = shared.conns().drain().map(|(_, t)| t).collect();
        add(&shared.counters.cut, tokens.len() as u64);
        for token in tokens {
            token.cancel();
        }
    }

    /// Back to plain forwarding: no delay, blackhole, refuse and lost
    /// replies all off. A close held back by the blackhole is forwarded now.
    pub fn pass(&self) {
        self.modify(|f| *f = Faults::default());
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.shared().stats()
    }

    /// Polls [`stats`](Self::stats) every few milliseconds until
    /// `pred(&stats)` holds.
    ///
    /// # Panics
    /// When `pred` does not hold within `timeout`; the message names `what`
    /// and shows the last stats.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ProxyStats) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if pred(&stats) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fault proxy {} -> {}: no {what} within {timeout:?}; stats: {stats:?}",
                    self.inner.addr,
                    self.shared().upstream
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the proxy: the listener is closed and every connection is
    /// closed with a reset on both sides (not counted as cut). The tasks
    /// notice at their next poll, so the port closes shortly after this
    /// returns. Idempotent; dropping the last handle does the same.
    pub fn shutdown(&self) {
        self.shared().shutdown.cancel();
    }
}

/// Accepts connections until shutdown, spawning a task per connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                // Transient (out of file descriptors, aborted handshake):
                // back off a little instead of spinning.
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
        };
        add(&shared.counters.accepted, 1);
        if shared.faults().refuse {
            add(&shared.counters.refused, 1);
            abort(&client);
            drop(client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let token = shared.shutdown.child_token();
        shared.conns().insert(id, token.clone());
        add(&shared.counters.open, 1);
        let guard = OpenGuard {
            shared: Arc::clone(&shared),
            id,
        };
        tokio::spawn(connection(client, token, guard));
    }
}

/// Marks a connection closed (uncounts it from `open`, forgets its cut
/// token) when its task ends, however it ends.
struct OpenGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.shared.conns().remove(&self.id);
        self.shared.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Makes the next close of `stream` a reset (RST) instead of a FIN.
fn abort(stream: &TcpStream) {
    // The deprecation is about a positive linger blocking the thread on
    // close; a zero linger never blocks. (`set_zero_linger` would need a
    // newer tokio than the workspace's minimum.) Failure just means a
    // normal close.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
}

/// One proxied connection: connects upstream, then pumps both directions
/// until both have ended, an I/O error, a cut or shutdown.
async fn connection(mut client: TcpStream, token: CancellationToken, guard: OpenGuard) {
    let shared = &*guard.shared;
    let connected = tokio::select! {
        () = token.cancelled() => None,
        connected = TcpStream::connect(shared.upstream) => connected.ok(),
    };
    let Some(mut server) = connected else {
        // Cut, shut down, or the server cannot be reached: the client gets
        // a reset, as it would from a server that is not there.
        abort(&client);
        return;
    };
    // Lock protocols exchange small messages; do not let Nagle add delays
    // of its own. Failure only costs latency.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clean = {
        let (client_rd, client_wr) = client.split();
        let (server_rd, server_wr) = server.split();
        let up = pump(shared, Direction::Up, client_rd, server_wr);
        let down = pump(shared, Direction::Down, server_rd, client_wr);
        tokio::select! {
            () = token.cancelled() => false,
            both = async { tokio::try_join!(up, down) } => both.is_ok(),
        }
    };
    if !clean {
        // Cut, shutdown, or an error (such as a reset) on one side: reset
        // both sides rather than leaving one of them half-informed.
        abort(&client);
        abort(&server);
    }
    // Both sockets close here, before the guard uncounts the connection.
    drop(client);
    drop(server);
    drop(guard);
}

/// One chunk in flight: bytes, or `None` for the end of the stream.
type Chunk = (Instant, Option<Vec<u8>>);

/// Forwards `from` to `to`, applying the faults, until EOF has been
/// forwarded (the write half of `to` shut down) or an I/O error.
///
/// A reader and a writer run concurrently, joined by a queue of
/// time-stamped chunks, so a delay holds each chunk for the delay without
/// holding up the reading of the ones after it.
async fn pump(
    shared: &Shared,
    dir: Direction,
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            let faults = shared.faults();
            if n == 0 {
                if faults.blackhole {
                    // A partition swallows the close too; let it through
                    // once the blackhole is off.
                    let mut changes = shared.faults.subscribe();
                    let _ = changes.wait_for(|f| !f.blackhole).await;
                }
                let due = Instant::now() + shared.faults().delay(dir);
                // Fails only when the writer has ended with an error,
                // which `try_join!` reports.
                let _ = tx.send((due, None)).await;
                return Ok(());
            }
            if faults.discards(dir) {
                shared.dropped(dir, n);
                continue;
            }
            let due = Instant::now() + faults.delay(dir);
            if tx.send((due, Some(buf[..n].to_vec()))).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            let Some(bytes) = chunk else {
                to.shutdown().await?;
                return Ok(());
            };
            // Switched on while the chunk waited out its delay.
            if shared.faults().discards(dir) {
                shared.dropped(dir, bytes.len());
                continue;
            }
            to.write_all(&bytes).await?;
            shared.forwarded(dir, bytes.len());
        }
        // The reader ended with an error, which `try_join!` reports.
        Ok(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}
