//! # lockkit-etcd
//!
//! The etcd backend of lockkit: session leases, a FIFO queue of keys
//! ordered by create revision, and watches (`ARCHITECTURE.md` §6).
//!
//! ```no_run
//! use std::sync::Arc;
//! use lockkit_core::Locker;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lockkit_core::Result<()> {
//! let backend = lockkit_etcd::connect("etcd://127.0.0.1:2379,127.0.0.2:2379").await?;
//! let locker = Locker::new(Arc::new(backend), "pipeline_1")?;
//! let guard = locker.acquire("node_b").await?;
//! // … pass guard.token() (the key's create revision) to fenced storage …
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## URLs
//!
//! | form | meaning |
//! |---|---|
//! | `etcd://host:port[,host:port…]` | plain gRPC to one or more members (default port 2379) |
//! | `etcd://user:password@host:port` | etcd authentication (user and password percent-encoded) |
//! | `etcds://host:port?ca=/ca.pem[&cert=/c.pem&key=/k.pem][&domain=name]` | TLS (feature `tls`), optionally with a client certificate |
//! | `…?prefix=team/locks` | key prefix (default `lockkit`) |
//!
//! [`connect_with`] takes [`EtcdOptions`] for the same settings in code
//! (options win over the URL) plus request and connect timeouts. A wrong
//! password is an [`Error::Configuration`] whose message shows the URL with
//! the password replaced by `***`.
//!
//! ## The recipe
//!
//! - **Session.** Each backend instance holds one etcd lease per distinct
//!   lock TTL in use (in practice one: a [`Locker`](lockkit_core::Locker)
//!   uses one TTL), shared by every key it writes and kept alive by one
//!   background keep-alive stream every TTL/3. Upkeep does not grow with the
//!   number of held locks. If keep-alives fail until the lease may have
//!   expired, or etcd says it is gone, the session is lost and every lock
//!   on it reports the loss through
//!   [`loss_signal`](lockkit_core::LockBackend::loss_signal) (its guard fires
//!   lost at once).
//! - **TTLs are whole seconds**, rounded up, and at least etcd's minimum
//!   lease TTL (`ceil(1.5 × election timeout)`, 2 s with default settings).
//!   The TTL etcd actually granted is the lease's [`ttl`](Lease::ttl).
//! - **Lock.** A request for name `L` puts `<prefix>/<L>/<lease id>` (name
//!   and id percent-encoded) on the session lease. A try puts it only if
//!   the name has no key (one transaction; otherwise it reads the oldest
//!   key, which is its own if a retried attempt got through). The holder
//!   is the key with the lowest create revision; a waiter puts its key
//!   unconditionally, watches only the deletion of the key just before
//!   its own (FIFO, no thundering herd), then re-reads its own key in the
//!   same transaction that checks it is first — if its lease expired or
//!   was revoked while it waited, it gets an error rather than the lock
//!   (etcd-io/etcd#11456). A lock is a semaphore of one permit: the same
//!   keys and steps (see "Semaphores" and the `queue` module).
//! - **Fencing token** = the key's create revision: etcd's global revision,
//!   durable and increasing across clients, restarts and leader changes.
//! - **Per-lock TTL on a shared lease.** Because the session is kept alive
//!   in the background, a lock whose holder stops extending it must still
//!   end after its TTL: the backend's one deadline queue (a core
//!   `TimerQueue`, no task per lock) deletes the key when its deadline
//!   passes without an `extend`, and fires the loss signal. `extend` is one transaction that checks the key
//!   still carries its create revision (so a force-release or an expiry is
//!   noticed) and moves the local deadline; when the TTL changes it also
//!   re-attaches the key to the session of the new TTL.
//! - **Release** deletes the key if it still has the lease's create
//!   revision. Timeouts and cancelled waits delete the waiter's key
//!   (cancellation: from a spawned task as the future is dropped).
//! - **Inspection.** [`holders`](LockBackend::holders) and
//!   [`list`](LockBackend::list) read the first N keys of each name (N
//!   from the oldest key's value; one for a lock);
//!   [`force_release`](LockBackend::force_release) deletes them, each only
//!   if it still has the create revision read: the next waiters are woken
//!   by their watches, and each holder's backend, which watches
//!   each key it holds (one watch per key, all of them multiplexed on one
//!   gRPC stream per backend, created 100 ms after the grant so that short
//!   holds cost no watch; it starts from the key's creation, so an earlier
//!   deletion is still reported), fires the loss signal at once (its next `extend`
//!   would find out anyway); [`cleanup_expired`](LockBackend::cleanup_expired)
//!   is a no-op since etcd expires leases itself.
//!
//! ## Semaphores
//!
//! A request with [`permits`](AcquireRequest::permits) N > 1 takes one of N
//! permits of a name (`ARCHITECTURE.md` §13 "Semaphores"); everything
//! above — one key per request on the session lease, extend, release,
//! per-lock deadlines, loss signals — holds for each permit.
//!
//! - **Keys.** The same `<prefix>/<name>/<lease id>` per request; the
//!   value carries the permit count: `lockkit2\n<ms>\n<N>\n<owner>`
//!   (a lock keeps `lockkit1\n<ms>\n<owner>`).
//! - **Admission** is by create order: **the first N keys by create
//!   revision hold** the name. A key only moves up the line (newer keys go
//!   behind it), so once among the first N it holds until deleted, and at
//!   no revision do more than N keys hold. A try reads the first N keys and
//!   puts its own only if fewer exist, in a transaction conditional on no
//!   key of the name being created since that read (`create_revision <
//!   read + 1` over the prefix; the first attempt uses 0, i.e. "no key at
//!   all", so a free name — and every lock — costs one round trip, a
//!   partly held one two). It never waits behind queued requests, which
//!   are keys too.
//! - **Waiting.** A waiter's key at position i ≥ N is admitted once fewer
//!   than N keys precede it. Any key ahead may go, so it watches the
//!   name's whole prefix for deletions (with the deleted key's previous
//!   version, to count only keys older than its own) and counts the keys
//!   ahead down; when fewer than N remain it re-checks in one transaction
//!   that its key still exists with its create revision and reads the
//!   keys ahead. With N = 1 this is the lock's recipe above: the key just
//!   before its own, watched alone.
//! - **Tokens** are the keys' create revisions: distinct, and rising in
//!   admission order across every permit (admission follows create order).
//! - **Mismatched counts.** Every request checks the permit count stored
//!   with the keys ahead of it — a try the first N keys, a waiter its
//!   predecessor and the first N at its join and every key ahead when it
//!   is admitted — and fails with
//!   [`Error::PermitsMismatch`]
//!   when one differs, deleting its own key. Once every key of the old
//!   count is gone, a new count works.
//! - **Fencing with N holders.** Tokens are unique and ordered, but N
//!   holders hold at once: a store that keeps a single high-water mark
//!   would refuse every holder but the newest. Check the writer's lease id
//!   against [`holders`](LockBackend::holders) (the first N keys) or fence
//!   per resource instead.
//! - **Cost.** A waiter of a semaphore receives every deletion under the
//!   name's prefix (counted locally, no round trip), and re-checks only
//!   when its count says it may be admitted; N ≤
//!   [`MAX_PERMITS`](lockkit_core::MAX_PERMITS).

//! ## Guarantees and limits
//!
//! - A holder's local deadline is the earlier of its TTL and the instant
//!   until which its session lease is *certainly* alive (the last
//!   keep-alive etcd answered, counted from before it was sent, plus the
//!   TTL). A lease is never believed held after etcd may have expired it.
//! - A live holder that stops extending a lock frees it after the TTL
//!   (by its own deadline queue); a holder that dies or loses etcd frees it when
//!   etcd expires its session lease: after the TTL plus etcd's expiry check
//!   (every 500 ms) — and, if the etcd leader changes meanwhile, up to an
//!   election timeout more, since a new leader renews all leases.
//! - `acquired_at` in [`LockInfo`] is the requesting client's wall clock at
//!   the grant (etcd exposes no server time); `expires_at` is `None`
//!   (session-bound).
//! - etcd is linearizable only while a majority of members is up. Every
//!   request this crate sends is idempotent (conditional transactions on
//!   create revisions, puts of a key only its owner writes, reads), so a
//!   request that fails transiently — a dead member, a member without a
//!   leader (`require_leader` is on), an answer that takes longer than a
//!   third of the request timeout — is retried at once on another member
//!   within the request timeout (default 5 s). Observed when the leader of
//!   a 3-member cluster is killed: a new leader within 1–2.7 s, the longest
//!   pause between grants ≈ 1.7 s, no acquire error, no lost lease, FIFO
//!   order kept. A retried `release` whose first attempt did get through
//!   answers "not held" (the conservative answer).
//! - Reusing one [`AcquireRequest`] (the same lease id) after an error is
//!   not supported: failed requests delete their key in the background.
//!
//! ## Departures from the plain recipe
//!
//! - One session *per distinct granted TTL* rather than strictly one per
//!   client: a key's lease decides how soon it vanishes after a crash, so a
//!   lock's key sits on a lease of its own TTL.
//! - A live client's un-extended lock is freed by its own deadline queue (its
//!   monotonic clock, never earlier than the holder's own deadline); etcd's
//!   clock decides only when the client dies or is cut off.
//!
//! ## Raw state
//!
//! [`EtcdBackend::client`] and the re-exported [`etcd_client`] give access to
//! the keys for inspection: `<prefix>/<encoded name>/<encoded lease id>`,
//! value `lockkit1\n<ms since epoch>\n<owner>` for a lock,
//! `lockkit2\n<ms since epoch>\n<permits>\n<owner>` for a semaphore.

mod backend;
mod config;
mod deletions;
mod error;
mod held;
mod keys;
mod queue;
mod session;
mod shared;

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use lockkit_core::{Error, Result};

pub use crate::backend::EtcdBackend;
pub use crate::config::{
    DEFAULT_PORT, DEFAULT_PREFIX, EtcdOptions, TlsFiles, URL_PARAMS, URL_SCHEMES,
};

/// Whether this build can connect with TLS (`etcds://`, the `tls` feature).
pub const TLS_SUPPORTED: bool = cfg!(feature = "tls");

#[cfg(doc)]
use lockkit_core::{Lease, LockBackend, LockInfo, spi::AcquireRequest};

/// Connects to etcd at `url` (see the [crate docs](crate) for the forms).
///
/// # Errors
/// [`Error::Configuration`] for a malformed URL, TLS without the `tls`
/// feature, unreadable TLS files or failed authentication;
/// [`Error::Transient`] when no member answers within the connect timeout.
/// Messages show the URL with its password replaced by `***`.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lockkit_core::Result<()> {
/// let backend = lockkit_etcd::connect("etcd://root:s3cret@127.0.0.1:2379").await?;
/// # Ok(())
/// # }
/// ```
pub async fn connect(url: &str) -> Result<EtcdBackend> {
    connect_with(url, EtcdOptions::default()).await
}

/// Connects to etcd at `url` with `options` (which win over the URL).
///
/// # Errors
/// As [`connect`]; [`Error::InvalidInput`] for an invalid key prefix.
pub async fn connect_with(url: &str, options: EtcdOptions) -> Result<EtcdBackend> {
    let settings = config::Settings::new(url, options)?;
    let layout = keys::Layout::new(&settings.prefix)?;
    let redacted = settings.redacted.clone();
    let in_context = |err: Error| match err {
        Error::Configuration { message, source } => Error::Configuration {
            message: format!("connecting to etcd at {redacted:?}: {message}"),
            source,
        },
        Error::Transient {
            backend,
            message,
            source,
        } => Error::Transient {
            backend,
            message: format!("connecting to etcd at {redacted:?}: {message}"),
            source,
        },
        Error::Backend {
            backend,
            message,
            source,
        } => Error::Backend {
            backend,
            message: format!("connecting to etcd at {redacted:?}: {message}"),
            source,
        },
        other => other,
    };
    let mut connect_options = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        // etcd refuses HTTP/2 pings more often than every 5 s by default.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(false)
        // A member cut off from the leader answers "no leader" at once
        // instead of holding requests; they are retried on another member.
        .with_require_leader(true);
    if let Some((user, password)) = &settings.credentials {
        connect_options = connect_options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(files) = &settings.tls {
        connect_options = tls::apply(connect_options, files).map_err(&in_context)?;
    }
    let client = error::bounded(
        settings.connect_timeout,
        "connecting",
        Client::connect(settings.endpoints.clone(), Some(connect_options)),
    )
    .await
    .map_err(&in_context)?;
    // One round trip, so an unreachable cluster or a missing permission
    // fails here rather than at the first lock.
    error::retrying(settings.connect_timeout, "reading the lock prefix", || {
        let mut kv = client.kv_client();
        let root = layout.root().to_owned();
        async move {
            kv.get(
                root,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        }
    })
    .await
    .map_err(&in_context)?;
    Ok(EtcdBackend::new(
        client,
        layout,
        settings.request_timeout,
        settings.redacted,
    ))
}

#[cfg(feature = "tls")]
mod tls {
    use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
    use lockkit_core::{Error, Result};

    use crate::config::TlsFiles;

    fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::Configuration {
            message: format!("cannot read the TLS {what} {}: {e}", path.display()),
            source: Some(Box::new(e)),
        })
    }

    /// Adds the TLS settings of `files` to `options`.
    pub(crate) fn apply(options: ConnectOptions, files: &TlsFiles) -> Result<ConnectOptions> {
        let mut tls = TlsOptions::new();
        match &files.ca {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA file")?)),
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        if let Some(domain) = &files.domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(options.with_tls(tls))
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use etcd_client::ConnectOptions;
    use lockkit_core::{Error, Result};

    use crate::config::TlsFiles;

    /// Without the `tls` feature, TLS settings are a configuration error.
    pub(crate) fn apply(_options: ConnectOptions, _files: &TlsFiles) -> Result<ConnectOptions> {
        Err(Error::configuration(
            "TLS (etcds:// or TLS options) needs the `tls` feature of the `lockkit-etcd` crate",
        ))
    }
}
