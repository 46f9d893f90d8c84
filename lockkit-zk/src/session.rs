//! The backend's one ZooKeeper session, watched for expiry and silence.
//!
//! A [`Generation`] is one period during which leases may be trusted: the
//! session is alive and the server has replied recently. It ends (its
//! `lost` token is cancelled, and with it the loss signal of every lease
//! granted in it) when
//! - the session expires, is closed or fails authentication, or
//! - no reply came from the server for 2/3 of the negotiated session
//!   timeout (the server may expire the session after the full timeout,
//!   counted from the last request it received; we count from the last
//!   request we *sent* that got a reply, which is earlier).
//!
//! After a silence the same session carries on in a new generation; after
//! an expiry a new session is opened (the `monitor` module watches for
//! both).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use lockkit_core::spi::LossGroup;
use lockkit_core::{Error, LostReason, Result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Acl, Acls, Client, CreateMode, Error as ZkError};

use crate::config::Credentials;
use crate::error::{KIND, classify, server_replied};

/// How much of the session timeout may pass without a reply before every
/// lease of the session is reported lost.
const SAFE_NUMERATOR: u32 = 2;
const SAFE_DENOMINATOR: u32 = 3;

/// What is needed to open (and re-open) the session.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSpec {
    pub(crate) hosts: String,
    pub(crate) chroot: Option<String>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) session_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) detached: bool,
    pub(crate) redacted: String,
    pub(crate) acls: Vec<Acl>,
}

impl ConnectSpec {
    /// Opens a session, creating the chroot if it is missing.
    pub(crate) async fn open(&self) -> Result<Client> {
        let mut connector = Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_fail_eagerly();
        if let Some(credentials) = &self.credentials {
            connector = connector.with_auth("digest", &credentials.digest());
        }
        if self.detached {
            connector = connector.with_detached();
        }
        let client = tokio::time::timeout(self.connect_timeout, connector.connect(&self.hosts))
            .await
            .map_err(|_| {
                Error::transient(
                    KIND,
                    format!(
                        "no ZooKeeper session with {} within {:?}",
                        self.redacted, self.connect_timeout
                    ),
                    None,
                )
            })?
            .map_err(|e| classify(e, &format!("connecting to {}", self.redacted)))?;
        let Some(chroot) = &self.chroot else {
            return Ok(client);
        };
        client
            .mkdir(
                chroot,
                &CreateMode::Persistent.with_acls(Acls::new(&self.acls)),
            )
            .await
            .map_err(|e| classify(e, &format!("creating the chroot {chroot:?}")))?;
        client.chroot(chroot.clone()).map_err(|_| {
            Error::configuration(format!("bad chroot {chroot:?} in {}", self.redacted))
        })
    }
}

/// One trusted period of the session (see the module docs).
#[derive(Debug)]
pub(crate) struct Generation {
    pub(crate) client: Client,
    pub(crate) number: u64,
    lost: CancellationToken,
    reason: OnceLock<String>,
    /// The loss signals of the leases granted in this generation: they
    /// fire together when it ends.
    leases: LossGroup,
    last_ok: Mutex<Instant>,
    heartbeat_in_flight: AtomicBool,
}

impl Generation {
    fn new(client: Client, number: u64, last_ok: Instant) -> Self {
        Self {
            client,
            number,
            lost: CancellationToken::new(),
            reason: OnceLock::new(),
            leases: LossGroup::new(),
            last_ok: Mutex::new(last_ok),
            heartbeat_in_flight: AtomicBool::new(false),
        }
    }

    /// The timeout the server granted.
    pub(crate) fn session_timeout(&self) -> Duration {
        self.client.session_timeout()
    }

    /// How long after the last reply leases stay trusted.
    pub(crate) fn safe_window(&self) -> Duration {
        self.session_timeout() * SAFE_NUMERATOR / SAFE_DENOMINATOR
    }

    /// Notes that the server processed a request sent at `sent_at`.
    pub(crate) fn touch(&self, sent_at: Instant) {
        let mut last = self.last_ok.lock().unwrap_or_else(PoisonError::into_inner);
        if sent_at > *last {
            *last = sent_at;
        }
    }

    /// Touches if `result` is a reply from the server.
    pub(crate) fn observe<T>(&self, sent_at: Instant, result: &std::result::Result<T, ZkError>) {
        if server_replied(result) {
            self.touch(sent_at);
        }
    }

    /// When the last request that got a reply was sent.
    pub(crate) fn last_ok(&self) -> Instant {
        *self.last_ok.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group the loss signals of this generation's leases join.
    pub(crate) fn leases(&self) -> &LossGroup {
        &self.leases
    }

    /// Whether this generation has ended.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Why this generation ended.
    pub(crate) fn reason(&self) -> String {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| "the ZooKeeper session ended".to_owned())
    }

    pub(crate) fn end(&self, reason: String) {
        if self.reason.set(reason.clone()).is_ok() {
            tracing::warn!(session = %self.client.session_id(), %reason, "leases of this ZooKeeper session are lost");
        }
        self.lost.cancel();
        self.leases.fire(LostReason::SessionLost(self.reason()));
    }

    pub(crate) fn spawn_heartbeat(self: &Arc<Self>) {
        if self.heartbeat_in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let generation = Arc::clone(self);
        tokio::spawn(async move {
            let sent_at = Instant::now();
            let result = generation.client.check_stat("/").await;
            generation.observe(sent_at, &result);
            generation
                .heartbeat_in_flight
                .store(false, Ordering::Release);
        });
    }
}

/// The current generation and how to open new sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    current: Mutex<Arc<Generation>>,
    spec: ConnectSpec,
    counter: AtomicU64,
}

impl Sessions {
    pub(crate) fn new(client: Client, spec: ConnectSpec) -> Self {
        Self {
            current: Mutex::new(Arc::new(Generation::new(client, 1, Instant::now()))),
            spec,
            counter: AtomicU64::new(1),
        }
    }

    /// The generation new requests should use.
    pub(crate) fn current(&self) -> Arc<Generation> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn install(&self, client: Client, last_ok: Instant) -> Arc<Generation> {
        let number = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        let generation = Arc::new(Generation::new(client, number, last_ok));
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&generation);
        generation
    }

    pub(crate) fn spec(&self) -> &ConnectSpec {
        &self.spec
    }
}
