//! Self-test of the fault-injection proxy (`lockkit_tests::proxy`): a
//! small echo server on a free port, the proxy in front of it, and real
//! sockets on both sides. Every fault is checked by what the client and
//! the server actually see and by the proxy's counters; waits are for
//! signals or counters (with generous timeouts for a loaded machine), and
//! time is only ever asserted as a lower bound. The one bounded wait for
//! "nothing arrives" asserts an absence.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lockkit_tests::proxy::{FaultProxy, ProxyStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long anything that should happen may take.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long we watch for something that must not happen.
const SILENCE: Duration = Duration::from_millis(500);

/// What the echo server saw.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A connection was accepted.
    Connected,
    /// Bytes were read (and are echoed back).
    Data(Vec<u8>),
    /// A connection ended (EOF or an error).
    Closed,
}

/// An echo server on `127.0.0.1:0` reporting what it sees.
struct Echo {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the echo server");
        let addr = listener.local_addr().expect("echo server address");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                let _ = tx.send(Event::Connected);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let _ = tx.send(Event::Data(buf[..n].to_vec()));
                                if conn.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = conn.shutdown().await;
                    let _ = tx.send(Event::Closed);
                });
            }
        });
        Echo { addr, events }
    }

    /// The next event, within [`PATIENCE`].
    async fn next(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("an echo server event in time")
            .expect("the echo server is running")
    }

    async fn expect_connected(&mut self) {
        assert_eq!(self.next().await, Event::Connected);
    }

    /// Collects `Data` events until `expected` has arrived in full.
    async fn expect_data(&mut self, expected: &[u8]) {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match self.next().await {
                Event::Data(bytes) => got.extend_from_slice(&bytes),
                other => panic!("expected data {expected:?}, got {other:?} after {got:?}"),
            }
        }
        assert_eq!(got, expected, "the echo server received");
    }

    async fn expect_closed(&mut self) {
        assert_eq!(self.next().await, Event::Closed);
    }

    /// Asserts that the server sees nothing for [`SILENCE`].
    async fn expect_silence(&mut self) {
        if let Ok(event) = tokio::time::timeout(SILENCE, self.events.recv()).await {
            panic!("the echo server should have seen nothing, saw {event:?}");
        }
    }
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr())
        .await
        .expect("connect to the proxy");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("the reply in time")
        .expect("read the reply");
    buf
}

/// Asserts that a new connection to the proxy is closed (EOF or reset)
/// without any data; the reset may come so fast that already the connect
/// reports it.
async fn expect_connection_closed(proxy: &FaultProxy) {
    let mut stream = match TcpStream::connect(proxy.addr()).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("connect to the proxy: {e}"),
    };
    // The write may already fail if the reset came first.
    let _ = stream.write_all(b"let me in").await;
    expect_closed(&mut stream).await;
}

/// Writes `data` and reads its echo.
async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).await.expect("write to the proxy");
    assert_eq!(read_exact(stream, data.len()).await, data, "the echo");
}

/// Asserts that nothing arrives on `stream` for [`SILENCE`].
async fn expect_no_reply(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    if let Ok(read) = tokio::time::timeout(SILENCE, stream.read(&mut buf)).await {
        panic!("the client should have received nothing, read {read:?}");
    }
}

/// Asserts that `stream` is closed by the other side (EOF or reset) in
/// time, without any data before.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a closed connection, read {:?}", &buf[..n]),
        Err(_) => panic!("the connection was not closed within {PATIENCE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_forwards_both_ways_and_half_closes() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await;
    assert_eq!(proxy.addr().ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(proxy.port(), proxy.addr().port());
    assert_eq!(proxy.upstream(), echo.addr);
    assert_eq!(proxy.stats(), ProxyStats::default());

    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"hello, proxy").await;
    echo.expect_connected().await;
    echo.expect_data(b"hello, proxy").await;
    proxy
        .wait_for("12 bytes each way", PATIENCE, |s| {
            s.bytes_up == 12 && s.bytes_down == 12
        })
        .await;
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.open), (1, 1), "{stats:?}");

    // Half-close: the client's EOF reaches the server, which still answers
    // the last bytes and closes; the client reads them, then EOF.
    client.write_all(b"last words").await.expect("write");
    client.shutdown().await.expect("shut down the write half");
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .expect("read to EOF");
    assert_eq!(rest, b"last words");
    echo.expect_data(b"last words").await;
    echo.expect_closed().await;
    proxy
        .wait_for("the connection to close", PATIENCE, |s| s.open == 0)
        .await;
    let stats = proxy.stats();
    assert_eq!(stats.bytes_up, 22, "{stats:?}");
    assert_eq!(stats.bytes_down, 22, "{stats:?}");
    assert_eq!(
        (
            stats.cut,
            stats.refused,
            stats.dropped_up,
            stats.dropped_down
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_holds_each_direction_and_keeps_order() {
    const DELAY: Duration = Duration::from_millis(300);
    let echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"warm-up").await;

    proxy.set_delay(DELAY);
    let started = Instant::now();
    round_trip(&mut client, b"ping").await;
    let took = started.elapsed();
    assert!(took >= 2 * DELAY, "a delayed round trip took only {took:?}");

    // Five chunks back to back (separate writes; TCP may still merge
    // some): all of them come back, in order, each at least two delays
    // after it was sent.
    let chunks: Vec<Vec<u8>> = (0..5).map(|i| format!("chunk-{i};").into_bytes()).collect();
    let started = Instant::now();
    for chunk in &chunks {
        client.write_all(chunk).await.expect("write a chunk");
    }
    let first = read_exact(&mut client, chunks[0].len()).await;
    let first_took = started.elapsed();
    let total: usize = chunks.iter().map(Vec::len).sum::<usize>() - first.len();
    let rest = read_exact(&mut client, total).await;
    let all_took = started.elapsed();
    assert_eq!([first, rest].concat(), chunks.concat(), "order kept");
    assert!(
        first_took >= 2 * DELAY,
        "the first chunk came back after only {first_took:?}"
    );
    assert!(
        all_took >= 2 * DELAY,
        "all chunks came back after {all_took:?}"
    );

    // A connection opened while the delay is on is delayed too.
    let mut second = connect(&proxy).await;
    let started = Instant::now();
    round_trip(&mut second, b"pong").await;
    assert!(started.elapsed() >= 2 * DELAY);

    // Back to no delay: still works.
    proxy.set_delay(Duration::ZERO);
    round_trip(&mut client, b"fast again").await;
    proxy.pass();
    round_trip(&mut second, b"plain").await;
    let stats = proxy.stats();
    assert_eq!(stats.bytes_up, stats.bytes_down, "{stats:?}");
    assert_eq!((stats.dropped_up, stats.dropped_down), (0, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lose_replies_forwards_requests_and_drops_answers() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;
    echo.expect_connected().await;
    echo.expect_data(b"before").await;

    proxy.set_lose_replies(true);
    client.write_all(b"was it done?").await.expect("write");
    // The server got (and executed, and answered) the request ...
    echo.expect_data(b"was it done?").await;
    proxy
        .wait_for("the reply to be dropped", PATIENCE, |s| {
            s.dropped_down >= 12
        })
        .await;
    // ... but the client never hears back.
    expect_no_reply(&mut client).await;
    let stats = proxy.stats();
    assert_eq!(stats.dropped_down, 12, "{stats:?}");
    assert_eq!(stats.dropped_up, 0, "{stats:?}");
    assert_eq!(stats.bytes_up, 6 + 12, "{stats:?}");
    assert_eq!(stats.bytes_down, 6, "{stats:?}");

    // Replies flow again after pass(); the lost one stays lost.
    proxy.pass();
    round_trip(&mut client, b"after").await;
    echo.expect_data(b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_silences_both_directions_and_new_connections() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;
    echo.expect_connected().await;
    echo.expect_data(b"before").await;

    proxy.set_blackhole(true);
    client.write_all(b"anyone?").await.expect("write");
    proxy
        .wait_for("the request to be dropped", PATIENCE, |s| s.dropped_up >= 7)
        .await;
    echo.expect_silence().await;
    expect_no_reply(&mut client).await;

    // A new connection is accepted and connected upstream, but just as
    // silent; its close is held back too.
    let mut late = connect(&proxy).await;
    echo.expect_connected().await;
    late.write_all(b"hello?").await.expect("write");
    proxy
        .wait_for("the second request to be dropped", PATIENCE, |s| {
            s.dropped_up >= 13
        })
        .await;
    late.shutdown().await.expect("shut down the write half");
    echo.expect_silence().await;
    expect_no_reply(&mut late).await;
    let stats = proxy.stats();
    assert_eq!(stats.dropped_up, 13, "{stats:?}");
    assert_eq!(stats.dropped_down, 0, "{stats:?}");
    assert_eq!((stats.accepted, stats.open), (2, 2), "{stats:?}");
    assert_eq!(stats.bytes_up, 6, "{stats:?}");

    // Off again: traffic flows, and the held-back close reaches the server
    // (which closes in turn).
    proxy.pass();
    round_trip(&mut client, b"after").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(echo.next().await);
    }
    assert!(seen.contains(&Event::Data(b"after".to_vec())), "{seen:?}");
    assert!(seen.contains(&Event::Closed), "{seen:?}");
    expect_closed(&mut late).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_resets_open_connections_and_new_ones_work() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;
    echo.expect_connected().await;
    echo.expect_data(b"before").await;
    proxy
        .wait_for("one open connection", PATIENCE, |s| s.open == 1)
        .await;

    proxy.cut();
    assert_eq!(proxy.stats().cut, 1);
    expect_closed(&mut client).await;
    // The server side is closed as well.
    echo.expect_closed().await;
    proxy
        .wait_for("the cut connection to close", PATIENCE, |s| s.open == 0)
        .await;

    let mut again = connect(&proxy).await;
    round_trip(&mut again, b"after").await;
    echo.expect_connected().await;
    echo.expect_data(b"after").await;
    let stats = proxy.stats();
    assert_eq!(
        (stats.accepted, stats.open, stats.cut),
        (2, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_closes_new_connections_but_not_open_ones() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await;
    let mut open = connect(&proxy).await;
    round_trip(&mut open, b"before").await;
    echo.expect_connected().await;
    echo.expect_data(b"before").await;

    proxy.set_refuse(true);
    expect_connection_closed(&proxy).await;
    proxy
        .wait_for("one refused connection", PATIENCE, |s| s.refused == 1)
        .await;
    // Refused connections never reach the server; open ones still work.
    round_trip(&mut open, b"still here").await;
    echo.expect_data(b"still here").await;

    proxy.set_refuse(false);
    let mut welcome = connect(&proxy).await;
    round_trip(&mut welcome, b"welcome").await;
    echo.expect_connected().await;
    echo.expect_data(b"welcome").await;
    let stats = proxy.stats();
    assert_eq!(
        (stats.accepted, stats.refused, stats.open),
        (3, 1, 2),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_closes_the_client() {
    let gone = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let upstream = gone.local_addr().expect("address");
    drop(gone);
    let proxy = FaultProxy::start(upstream).await;
    expect_connection_closed(&proxy).await;
    proxy
        .wait_for("the connection to close", PATIENCE, |s| {
            s.accepted == 1 && s.open == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_closes_everything() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await;
    let addr = proxy.addr();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"bye").await;
    echo.expect_connected().await;
    echo.expect_data(b"bye").await;

    let clone = proxy.clone();
    drop(proxy);
    // A clone keeps it running.
    round_trip(&mut client, b"still").await;
    echo.expect_data(b"still").await;
    assert!(format!("{clone:?}").contains("FaultProxy"));

    drop(clone);
    expect_closed(&mut client).await;
    echo.expect_closed().await;
    // The listener goes away too.
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the proxy still accepts after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
