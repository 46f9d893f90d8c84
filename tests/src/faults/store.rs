//! The fenced store: a tiny TCP service in the test process that holds one
//! counter and admits a read or write only through a
//! [`lockkit_core::fence::Fence`] — a token at least the largest it
//! has seen (equal only from the same lease). It records every request, so
//! a test can count accepted writes and check them against the holders'
//! claims.
//!
//! Protocol, one line each way: `READ <proc> <token> <lease>` →
//! `OK <value>`; `WRITE <proc> <token> <lease> <value>` → `OK <value>`;
//! a refused request gets `STALE <highest>` or `REUSED`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use lockkit_core::fence::{Fence, FenceError};
use lockkit_core::{FencingToken, LeaseId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::event::mono_ns;

/// One request the store answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOp {
    /// When it was decided, on [`mono_ns`].
    pub t: u64,
    /// The taker that sent it.
    pub proc: String,
    /// A write (else a read).
    pub write: bool,
    /// The token it came with.
    pub token: u64,
    /// The lease id it came with.
    pub lease: String,
    /// The value written, or read.
    pub value: u64,
    /// Whether the fence admitted it.
    pub accepted: bool,
}

#[derive(Debug, Default)]
struct State {
    value: u64,
    ops: Vec<StoreOp>,
}

/// A running fenced store (stops with the runtime).
#[derive(Debug, Clone)]
pub struct FencedStore {
    addr: SocketAddr,
    fence: Arc<Fence>,
    state: Arc<Mutex<State>>,
}

impl FencedStore {
    /// Listens on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fenced store");
        let store = Self {
            addr: listener.local_addr().expect("the store's address"),
            fence: Arc::new(Fence::new()),
            state: Arc::default(),
        };
        let server = store.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().serve(stream));
            }
        });
        store
    }

    /// `127.0.0.1:<port>`, for the takers' `read`/`write` commands.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The counter's value.
    pub fn value(&self) -> u64 {
        self.lock().value
    }

    /// Every request answered so far, in order.
    pub fn ops(&self) -> Vec<StoreOp> {
        self.lock().ops.clone()
    }

    /// The number of writes the fence admitted.
    pub fn accepted_writes(&self) -> usize {
        self.lock()
            .ops
            .iter()
            .filter(|op| op.write && op.accepted)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn serve(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let reply = self.answer(&line);
            if write
                .write_all(format!("{reply}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn answer(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (write, proc, token, lease, value) = match words.as_slice() {
            ["READ", proc, token, lease] => (false, proc, token, lease, None),
            ["WRITE", proc, token, lease, value] => (true, proc, token, lease, Some(value)),
            _ => return format!("ERR bad request {line:?}"),
        };
        let (Ok(token), Ok(lease)) = (token.parse::<u64>(), LeaseId::parse(lease)) else {
            return format!("ERR bad token or lease in {line:?}");
        };
        let value = match value.map(|v| v.parse::<u64>()) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return format!("ERR bad value in {line:?}"),
            None => None,
        };
        // The fence check and the data change are one step under the lock.
        let mut state = self.lock();
        let verdict = self.fence.check(FencingToken::new(token), &lease);
        if verdict.is_ok()
            && let Some(v) = value
        {
            state.value = v;
        }
        let seen = value.unwrap_or(state.value);
        state.ops.push(StoreOp {
            t: mono_ns(),
            proc: (*proc).to_owned(),
            write,
            token,
            lease: lease.as_str().to_owned(),
            value: seen,
            accepted: verdict.is_ok(),
        });
        match verdict {
            Ok(()) => format!("OK {seen}"),
            Err(FenceError::Stale { highest, .. }) => format!("STALE {highest}"),
            Err(FenceError::Reused { .. }) => "REUSED".to_owned(),
        }
    }
}
