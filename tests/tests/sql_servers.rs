//! Postgres- and MariaDB-specific behaviour: processes racing on an empty
//! database, the client's wall clock not mattering, killed connections,
//! credentials and TLS, the stored rows, periodic clean-up, and (Postgres)
//! NOTIFY wake-ups on one shared LISTEN connection.
#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockkit_core::conformance::{Harness, unique_name};
use lockkit_core::spi::AcquireRequest;
use lockkit_core::{Error, LockBackend, LockOptions, Locker, spawn_cleanup};
use lockkit_sql::{SqlOptions, TableName};
use lockkit_tests::server::require_binary;
use lockkit_tests::sql_harness::{SqlHarness, SqlKind, fresh_table};
use tokio::time::Instant;

fn request(name: &lockkit_core::LockName, owner: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl).expect("request")
}

/// Three processes start at once on a table that does not exist yet: all
/// create the schema without error, and their critical sections never
/// overlap (marker file, read-modify-write counter, distinct tokens).
async fn processes_race_on_an_empty_database(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let table = fresh_table("race");
    let url = format!("{}?table={table}", harness.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter.txt");
    std::fs::write(&counter, "0").expect("counter");
    const PROCESSES: u64 = 3;
    const ROUNDS: u64 = 15;
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_contender"))
                .args([
                    url.as_str(),
                    counter.to_str().expect("utf-8"),
                    &ROUNDS.to_string(),
                    &format!("process-{i}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a contender")
        })
        .collect();
    let mut overlaps = 0u64;
    let mut tokens = Vec::new();
    let mut transcript = String::new();
    for child in children {
        let out = child.wait_with_output().expect("contender output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        transcript.push_str(&stdout);
        assert!(
            out.status.success(),
            "contender failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines() {
            if let Some(n) = line.strip_prefix("overlaps=") {
                overlaps += n.parse::<u64>().expect("count");
            }
            if let Some(list) = line.strip_prefix("tokens=") {
                tokens.extend(list.split(',').map(|t| t.parse::<u64>().expect("token")));
            }
        }
    }
    assert_eq!(overlaps, 0);
    let count: u64 = std::fs::read_to_string(&counter)
        .expect("counter")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(
        count,
        PROCESSES * ROUNDS,
        "a lost update means two holders overlapped:\n{transcript}"
    );
    let distinct: HashSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len() as u64, PROCESSES * ROUNDS);
}

/// A holder process whose wall clock is two hours ahead (faketime) takes a
/// lock for 4 s: the database clock decides — the row expires 4 s after
/// the database's now, and another client gets the lock after about 4 s.
///
/// The grant happened after `started`, so a try sent before
/// `started + ttl` must be refused; on a stalled machine that sends it
/// later, that part is not judged.
async fn client_clock_skew_changes_nothing(kind: SqlKind) {
    let faketime = require_binary("faketime", &[], "apt-get install -y faketime");
    let harness = SqlHarness::start(kind).await;
    let name = unique_name("skew");
    let ttl = Duration::from_secs(4);
    let started = Instant::now();
    let mut holder = Command::new(faketime)
        .args(["-f", "+2h"])
        .arg(env!("CARGO_BIN_EXE_skewed_holder"))
        .args([
            harness.lockkit_url(),
            name.to_string(),
            ttl.as_millis().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the skewed holder");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    let wall_ms: u128 = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| l.strip_prefix("wall_ms=").map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .expect("the holder reports its wall clock");
    // It prints after its grant.
    let granted_by = Instant::now();
    let real_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("epoch")
        .as_millis();
    assert!(
        wall_ms > real_ms + 3_600_000,
        "faketime must put the holder's clock ahead (holder {wall_ms}, real {real_ms})"
    );
    let info = harness
        .inspector()
        .current(&name)
        .await
        .expect("current")
        .expect("held by the skewed holder");
    let expires_in = info
        .expires_at
        .expect("rows expire")
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        expires_in <= ttl,
        "expiry {expires_in:?} away follows the database clock, not the holder's"
    );
    let other = harness.client().await;
    let sent = Instant::now();
    let early = other
        .try_acquire(&request(&name, "other", ttl))
        .await
        .expect("try");
    if sent < started + ttl {
        assert!(early.is_none(), "the skewed holder's row is live");
    }
    if let Some(early) = early {
        assert!(other.release(&early).await.expect("release"));
    }
    let lease = other
        .acquire(
            &request(&name, "other", ttl),
            Some(granted_by + ttl + Duration::from_secs(3)),
        )
        .await
        .expect("free about 4 s later, by the database clock");
    assert!(
        started.elapsed() + Duration::from_millis(300) >= ttl,
        "freed too early: {:?}",
        started.elapsed()
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(other.release(&lease).await.expect("release"));
}

/// A single-connection backend for the holder, and that connection's id
/// on the server.
async fn holder_with_known_connection(
    harness: &SqlHarness,
    table: &TableName,
) -> (Arc<dyn LockBackend>, i64) {
    let options = SqlOptions {
        table: table.clone(),
        ..SqlOptions::default()
    };
    match harness.kind() {
        #[cfg(feature = "postgres")]
        SqlKind::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(harness.url())
                .await
                .expect("pool");
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .expect("pid");
            let backend = lockkit_sql::postgres::PostgresBackend::from_pool(pool, options)
                .await
                .expect("backend");
            (Arc::new(backend), i64::from(pid))
        }
        #[cfg(feature = "mysql")]
        SqlKind::MySql => {
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(1)
                .connect(harness.url())
                .await
                .expect("pool");
            let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                .fetch_one(&pool)
                .await
                .expect("id");
            let backend = lockkit_sql::mysql::MySqlBackend::from_pool(pool, options)
                .await
                .expect("backend");
            (Arc::new(backend), i64::try_from(id).expect("fits"))
        }
    }
}

async fn kill_connection(harness: &SqlHarness, id: i64) {
    match harness.kind() {
        #[cfg(feature = "postgres")]
        SqlKind::Postgres => {
            let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1::int)")
                .bind(id)
                .fetch_one(harness.pg())
                .await
                .expect("pg_terminate_backend");
            assert!(killed, "the holder's connection was terminated");
        }
        #[cfg(feature = "mysql")]
        SqlKind::MySql => {
            sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
                .execute(harness.my())
                .await
                .expect("KILL");
        }
    }
}

/// The server kills the holder's only connection while it holds: no one
/// else gets in while the guard believes it holds, and the guard either
/// recovers (renewal reconnects) or reports the loss.
async fn killed_holder_connection_keeps_exclusion(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let (holder_backend, connection) =
        holder_with_known_connection(&harness, harness.table()).await;
    let ttl = Duration::from_millis(1500);
    let locker = Locker::new(holder_backend, "holder")
        .and_then(|l| l.with_options(LockOptions::new().ttl(ttl)))
        .expect("locker");
    let name = unique_name("killed-connection");
    let guard = locker.acquire(&name).await.expect("acquire");
    kill_connection(&harness, connection).await;
    let contender = harness.client().await;
    let until = Instant::now() + ttl * 3;
    while Instant::now() < until {
        let won = contender
            .try_acquire(&request(&name, "contender", ttl))
            .await
            .expect("try");
        if let Some(lease) = won {
            // The guard's local deadline (counted from before its last
            // request) ends before the row's; its timer may not have run
            // yet on a loaded machine, but `ensure_held` checks the clock.
            assert!(
                guard.ensure_held().is_err(),
                "two holders: the contender got in while the guard still claims the lock"
            );
            contender.release(&lease).await.expect("release");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if guard.is_lost() {
        eprintln!(
            "{kind:?}: the guard reported {:?} after its connection was killed",
            guard.lost_reason()
        );
    } else {
        let info = contender
            .current(&name)
            .await
            .expect("current")
            .expect("still held");
        assert_eq!(
            info.lease_id,
            guard.lease().lease_id,
            "the guard recovered its own lease"
        );
        eprintln!("{kind:?}: the guard recovered after its connection was killed");
        assert!(guard.release().await.expect("release"));
    }
}

/// The server kills the holder's only connection right before it
/// releases: the release reconnects and retries instead of failing with
/// a transient error, so the lock is free at once, not after its TTL.
async fn release_after_killed_connection_frees_the_lock(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let (holder_backend, connection) =
        holder_with_known_connection(&harness, harness.table()).await;
    let locker = Locker::new(holder_backend, "holder")
        .and_then(|l| l.with_options(LockOptions::new().ttl(Duration::from_secs(60))))
        .expect("locker");
    let name = unique_name("killed-before-release");
    let guard = locker.acquire(&name).await.expect("acquire");
    kill_connection(&harness, connection).await;
    assert!(
        guard
            .release()
            .await
            .expect("release retries a killed connection"),
        "the lease was held until the release"
    );
    let other = harness.client().await;
    let lease = other
        .try_acquire(&request(&name, "other", Duration::from_secs(60)))
        .await
        .expect("try")
        .expect("free right after the release, not after the 60 s TTL");
    assert!(other.release(&lease).await.expect("release"));
}

/// An unreachable server is a transient error that names the cause, at
/// once — not a configuration error after a pool timeout.
async fn unreachable_server_is_transient_at_once(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let authority_end = harness.url().rfind('/').expect("a database path");
    let host_start = harness.url().rfind('@').map_or(0, |at| at + 1);
    let url = format!(
        "{}127.0.0.1:{port}{}",
        &harness.url()[..host_start],
        &harness.url()[authority_end..]
    );
    let started = Instant::now();
    let err = lockkit::connect(&url)
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(err.is_retryable());
    let message = err.to_string();
    assert!(
        message.to_lowercase().contains("refused"),
        "the cause is named: {message}"
    );
    assert!(!message.contains("lockkit-test-pw"), "{message}");
    assert!(
        took < lockkit_sql::CONNECT_TIMEOUT,
        "reported at once, not after a timeout: {took:?}"
    );
}

/// A wrong password is a configuration error whose message names the
/// server but never the password.
async fn wrong_password_is_a_configuration_error(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let bad = harness
        .url()
        .replacen("lockkit-test-pw", "not-the-password", 1);
    assert_ne!(bad, harness.url(), "the fixture URL carries the password");
    let err = lockkit::connect(&bad).await.expect_err("wrong password");
    assert!(matches!(err, Error::Configuration { .. }), "{err}");
    let message = format!("{err} / {err:?}");
    assert!(
        !message.contains("not-the-password"),
        "password leaked: {message}"
    );
    assert!(
        message.contains("***"),
        "the URL is shown redacted: {message}"
    );
}

/// With TLS required by the URL, the connection is encrypted.
async fn tls_from_the_url(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let options = SqlOptions {
        table: harness.table().clone(),
        ..SqlOptions::default()
    };
    let encrypted = match kind {
        #[cfg(feature = "postgres")]
        SqlKind::Postgres => {
            let url = format!("{}?sslmode=require", harness.url());
            let backend = lockkit_sql::postgres::connect_with(&url, options)
                .await
                .expect("TLS connect");
            sqlx::query_scalar::<_, bool>(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )
            .fetch_one(backend.pool())
            .await
            .expect("pg_stat_ssl")
        }
        #[cfg(feature = "mysql")]
        SqlKind::MySql => {
            let url = format!("{}?ssl-mode=required", harness.url());
            let backend = lockkit_sql::mysql::connect_with(&url, options)
                .await
                .expect("TLS connect");
            let (_, cipher): (String, String) =
                sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                    .fetch_one(backend.pool())
                    .await
                    .expect("Ssl_cipher");
            !cipher.is_empty()
        }
    };
    assert!(encrypted, "the connection must use TLS");
}

/// Rows hold names byte-exact and the TTL by the database clock; the
/// fence high-water mark survives release and clean-up; a periodic
/// clean-up task removes expired rows on its own.
async fn stored_rows_high_water_and_periodic_cleanup(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let client = harness.client().await;
    let name = lockkit_core::LockName::new(format!(
        "{}/'; DROP TABLE locks; -- \\ 🔒",
        unique_name("rows")
    ))
    .expect("name");
    let lease = client
        .try_acquire(&request(&name, "pipeline_1", Duration::from_secs(600)))
        .await
        .expect("try")
        .expect("free");
    let t = harness.table().table().to_owned();
    let (bytes, lifetime_ms, fence): (i64, i64, i64) = match kind {
        #[cfg(feature = "postgres")]
        SqlKind::Postgres => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT octet_length(lock_name)::bigint, (extract(epoch FROM expires_at - created_at) * 1000)::bigint, fence FROM \"{t}\" WHERE lock_name = $1"
        )))
        .bind(name.as_str())
        .fetch_one(harness.pg())
        .await
        .expect("row"),
        #[cfg(feature = "mysql")]
        SqlKind::MySql => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(LENGTH(lock_name) AS SIGNED), CAST(TIMESTAMPDIFF(MICROSECOND, created_at, expires_at) DIV 1000 AS SIGNED), fence FROM `{t}` WHERE lock_name = ?"
        )))
        .bind(name.as_str())
        .fetch_one(harness.my())
        .await
        .expect("row"),
    };
    assert_eq!(bytes as usize, name.as_str().len(), "stored byte-exact");
    assert_eq!(lifetime_ms, 600_000, "expires_at - created_at is the TTL");
    assert_eq!(fence as u64, lease.token.get());
    assert!(client.release(&lease).await.expect("release"));

    // Expired rows go away with a periodic clean-up task, and the next
    // grant continues from the high-water mark.
    let _cleanup = spawn_cleanup(Arc::clone(&client), Duration::from_millis(100));
    let short = client
        .try_acquire(&request(&name, "short", Duration::from_millis(200)))
        .await
        .expect("try")
        .expect("free");
    assert!(short.token > lease.token);
    let give_up = Instant::now() + Duration::from_secs(5);
    while !harness.leftovers(&name).await.is_empty() {
        assert!(
            Instant::now() < give_up,
            "the periodic clean-up never removed the expired row"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = client
        .try_acquire(&request(&name, "next", Duration::from_secs(5)))
        .await
        .expect("try")
        .expect("free");
    assert!(next.token > short.token, "tokens continue after clean-up");
    assert!(client.release(&next).await.expect("release"));
}

/// The SQL of [`a_single_row_table_becomes_one_row_per_permit`] for one
/// server: the tables as the release before semaphores created them (one
/// row per name, primary key `lock_name`) with a live lock row of token
/// 41 and its name's counter (every grant counted in `<table>_fence`), and
/// the query of the rebuilt table's primary key.
fn single_row_layout(kind: SqlKind, t: &str, lease_id: &str) -> (Vec<String>, String) {
    match kind {
        #[cfg(feature = "postgres")]
        SqlKind::Postgres => (
            vec![
                format!(
                    "CREATE TABLE \"{t}\" (lock_name TEXT NOT NULL PRIMARY KEY, owner_id TEXT NOT NULL, \
                     lease_id TEXT NOT NULL, fence BIGINT NOT NULL, \
                     created_at TIMESTAMPTZ NOT NULL DEFAULT now(), expires_at TIMESTAMPTZ NOT NULL, \
                     waiters BOOLEAN NOT NULL DEFAULT false)"
                ),
                format!("CREATE INDEX \"{t}_expires_at\" ON \"{t}\" (expires_at)"),
                format!(
                    "CREATE TABLE \"{t}_fence\" (lock_name TEXT NOT NULL PRIMARY KEY, fence BIGINT NOT NULL)"
                ),
                format!(
                    "CREATE TABLE \"{t}_queue\" (lock_name TEXT NOT NULL, lease_id TEXT NOT NULL, \
                     seq BIGINT GENERATED ALWAYS AS IDENTITY, expires_at TIMESTAMPTZ NOT NULL, \
                     PRIMARY KEY (lock_name, lease_id))"
                ),
                format!(
                    "INSERT INTO \"{t}\" (lock_name, owner_id, lease_id, fence, expires_at) \
                     VALUES ('kept', 'old', '{lease_id}', 41, now() + interval '1 hour')"
                ),
                format!("INSERT INTO \"{t}_fence\" VALUES ('kept', 41)"),
            ],
            format!(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = to_regclass('\"{t}\"') AND i.indisprimary \
                 ORDER BY array_position(i.indkey, a.attnum)"
            ),
        ),
        #[cfg(feature = "mysql")]
        SqlKind::MySql => (
            vec![
                format!(
                    "CREATE TABLE `{t}` (lock_name VARBINARY(255) NOT NULL, \
                     owner_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                     lease_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                     fence BIGINT NOT NULL, created_at DATETIME(6) NOT NULL, \
                     expires_at DATETIME(6) NOT NULL, PRIMARY KEY (lock_name), \
                     KEY `{t}_expires_at` (expires_at)) ENGINE=InnoDB"
                ),
                format!(
                    "CREATE TABLE `{t}_fence` (lock_name VARBINARY(255) NOT NULL PRIMARY KEY, \
                     fence BIGINT NOT NULL) ENGINE=InnoDB"
                ),
                format!(
                    "INSERT INTO `{t}` VALUES ('kept', 'old', '{lease_id}', 41, NOW(6), \
                     NOW(6) + INTERVAL 1 HOUR)"
                ),
                format!("INSERT INTO `{t}_fence` VALUES ('kept', 41)"),
            ],
            format!(
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{t}' AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION"
            ),
        ),
    }
}

/// Runs `sql` on the harness's own pool, returning the first column of
/// every row as text (`None` for statements without rows).
async fn raw_sql(harness: &SqlHarness, sql: String) -> Vec<String> {
    match harness.kind() {
        #[cfg(feature = "postgres")]
        SqlKind::Postgres => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(harness.pg())
            .await
            .expect("raw SQL"),
        #[cfg(feature = "mysql")]
        SqlKind::MySql => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(harness.my())
            .await
            .expect("raw SQL"),
    }
}

/// A table from before semaphores (one row per name) is rebuilt at
/// start-up with one row per held permit (primary key `lock_name,
/// lease_id`); its live row survives as a lock of one permit, holding off
/// other requests, and tokens continue from it; then a semaphore of 3
/// holds 3 rows, refuses a fourth and a lock request, and leaves no row
/// after its releases. Connecting again finds nothing to do.
async fn a_single_row_table_becomes_one_row_per_permit(kind: SqlKind) {
    const N: u32 = 3;
    const TTL: Duration = Duration::from_secs(60);
    let harness = SqlHarness::start(kind).await;
    let table = fresh_table("single_row");
    let t = table.table().to_owned();
    let old_id = lockkit_core::LeaseId::random();
    let (layout, primary_key) = single_row_layout(kind, &t, old_id.as_str());
    for ddl in layout {
        raw_sql(&harness, ddl).await;
    }
    let url = format!("{}?table={table}", harness.url());
    let backend = lockkit::connect(&url)
        .await
        .expect("connect upgrades the table");
    assert_eq!(
        raw_sql(&harness, primary_key.clone()).await,
        ["lock_name", "lease_id"],
        "one row per permit"
    );
    let kept = lockkit_core::LockName::new("kept").expect("name");
    let info = backend
        .current(&kept)
        .await
        .expect("current")
        .expect("the old live row survives the upgrade");
    assert_eq!(
        (&info.lease_id, info.token.get(), info.permits),
        (&old_id, 41, 1)
    );
    let new = request(&kept, "new", TTL);
    assert!(
        backend.try_acquire(&new).await.expect("try").is_none(),
        "still held"
    );
    assert!(backend.force_release(&kept).await.expect("force"));
    let after = backend.try_acquire(&new).await.expect("try").expect("free");
    assert_eq!(after.token.get(), 42, "tokens continue from the old row");
    assert!(backend.release(&after).await.expect("release"));

    let name = unique_name("upgraded-semaphore");
    let permit = |owner: &str| request(&name, owner, TTL).with_permits(N).expect("permits");
    let mut leases = Vec::new();
    for i in 0..N {
        leases.push(
            backend
                .try_acquire(&permit(&format!("holder-{i}")))
                .await
                .expect("try")
                .expect("a permit is free"),
        );
    }
    assert!(
        backend
            .try_acquire(&permit("extra"))
            .await
            .expect("try")
            .is_none()
    );
    assert!(matches!(
        backend.try_acquire(&request(&name, "lock", TTL)).await,
        Err(Error::PermitsMismatch {
            held: 3,
            asked: 1,
            ..
        })
    ));
    let count = |kind: SqlKind| match kind {
        #[cfg(feature = "postgres")]
        SqlKind::Postgres => format!(
            "SELECT count(*)::text FROM \"{t}\" WHERE lock_name = '{}'",
            name.as_str()
        ),
        #[cfg(feature = "mysql")]
        SqlKind::MySql => format!(
            "SELECT CAST(COUNT(*) AS CHAR) FROM `{t}` WHERE lock_name = '{}'",
            name.as_str()
        ),
    };
    assert_eq!(
        raw_sql(&harness, count(kind)).await,
        ["3"],
        "a row per permit"
    );
    let holders = backend.holders(&name).await.expect("holders");
    let mut tokens: Vec<u64> = holders.iter().map(|i| i.token.get()).collect();
    assert_eq!(
        tokens,
        leases.iter().map(|l| l.token.get()).collect::<Vec<_>>()
    );
    tokens.dedup();
    assert_eq!(tokens.len(), N as usize);
    for lease in &leases {
        assert!(backend.release(lease).await.expect("release"));
    }
    assert_eq!(raw_sql(&harness, count(kind)).await, ["0"], "no rows left");
    lockkit::connect(&url).await.expect("a second connect");
    assert_eq!(
        raw_sql(&harness, primary_key).await,
        ["lock_name", "lease_id"]
    );
}

/// The grant batch inlines names and owners as literals (MySQL: hex;
/// Postgres: escape strings): quotes,
/// backslashes, `?`, `;` and non-ASCII text arrive byte for byte, and
/// the stored row is the grant's.
async fn awkward_names_and_owners_survive_the_grant_batch(kind: SqlKind) {
    let harness = SqlHarness::start(kind).await;
    let backend = harness.client().await;
    let suffix = lockkit_tests::server::random_suffix();
    for (i, (name, owner)) in [
        (format!("it's/{suffix}"), "o'wner \\ \"x\""),
        (format!("q?mark;DROP TABLE x;--/{suffix}"), "who?;"),
        (format!("tâche-ü-名前/{suffix}"), "żółw 🐢"),
        (format!("back\\slash/{suffix}"), "-"),
        (format!("dollar $1 $$ E'x'/{suffix}"), "$2 \\' E''"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = lockkit_core::LockName::new(name).expect("valid name");
        let lease = backend
            .try_acquire(&request(&name, owner, Duration::from_secs(30)))
            .await
            .expect("try")
            .expect("free");
        let info = backend
            .current(&name)
            .await
            .expect("current")
            .expect("held");
        assert_eq!(info.name, name, "case {i}");
        assert_eq!(info.owner, owner, "case {i}");
        assert_eq!(info.lease_id, lease.lease_id, "case {i}");
        assert_eq!(info.token, lease.token, "case {i}");
        assert!(backend.release(&lease).await.expect("release"));
        let again = backend
            .try_acquire(&request(&name, owner, Duration::from_secs(30)))
            .await
            .expect("try")
            .expect("free again");
        assert!(again.token > lease.token, "case {i}: tokens rise");
        assert!(backend.release(&again).await.expect("release"));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn processes_race_on_an_empty_database() {
        super::processes_race_on_an_empty_database(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn client_clock_skew_changes_nothing() {
        super::client_clock_skew_changes_nothing(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn killed_holder_connection_keeps_exclusion() {
        super::killed_holder_connection_keeps_exclusion(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn wrong_password_is_a_configuration_error() {
        super::wrong_password_is_a_configuration_error(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn release_after_killed_connection_frees_the_lock() {
        super::release_after_killed_connection_frees_the_lock(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn unreachable_server_is_transient_at_once() {
        super::unreachable_server_is_transient_at_once(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn tls_from_the_url() {
        super::tls_from_the_url(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stored_rows_high_water_and_periodic_cleanup() {
        super::stored_rows_high_water_and_periodic_cleanup(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_single_row_table_becomes_one_row_per_permit() {
        super::a_single_row_table_becomes_one_row_per_permit(SqlKind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn awkward_names_and_owners_survive_the_grant_batch() {
        super::awkward_names_and_owners_survive_the_grant_batch(SqlKind::Postgres).await;
    }

    /// With a 5 s poll interval, a waiter still gets the lock within a
    /// fraction of a second of the release: NOTIFY woke it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn notify_wakes_a_waiter_long_before_the_poll_interval() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let slow_poll =
            lockkit_core::spi::PollPolicy::new(Duration::from_secs(5), Duration::from_secs(5));
        let waiter_backend = lockkit_sql::postgres::connect_with(
            harness.url(),
            SqlOptions {
                table: harness.table().clone(),
                poll: Some(slow_poll),
                ..SqlOptions::default()
            },
        )
        .await
        .expect("waiter backend");
        let holder = harness.client().await;
        let name = unique_name("notify");
        let held = holder
            .try_acquire(&request(&name, "holder", Duration::from_secs(30)))
            .await
            .expect("try")
            .expect("free");
        let waiter = {
            let name = name.clone();
            tokio::spawn(async move {
                let lease = waiter_backend
                    .acquire(
                        &request(&name, "waiter", Duration::from_secs(30)),
                        Some(Instant::now() + Duration::from_secs(20)),
                    )
                    .await;
                (lease, Instant::now(), waiter_backend)
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished());
        let released_at = Instant::now();
        assert!(holder.release(&held).await.expect("release"));
        let (lease, granted_at, waiter_backend) = waiter.await.expect("waiter");
        let lease = lease.expect("granted");
        let latency = granted_at - released_at;
        eprintln!("postgres: NOTIFY wake-up latency {latency:?} (poll interval 5 s)");
        assert!(
            latency < Duration::from_millis(1000),
            "woken after {latency:?}: not by NOTIFY"
        );
        assert!(waiter_backend.release(&lease).await.expect("release"));
    }

    /// The `waiters` flag of a row, or `None` without a row.
    async fn waiters_flag(harness: &SqlHarness, name: &lockkit_core::LockName) -> Option<bool> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT waiters FROM \"{}\" WHERE lock_name = $1",
            harness.table().table()
        )))
        .bind(name.as_str())
        .fetch_optional(harness.pg())
        .await
        .expect("read the waiters flag")
    }

    /// One step of a queued waiter (`LockQueue::step`).
    async fn step(
        backend: &dyn LockBackend,
        req: &AcquireRequest,
        place: &mut Option<lockkit_core::spi::QueuePlace>,
    ) -> Option<lockkit_core::Lease> {
        backend
            .queue()
            .expect("Postgres has a waiter queue")
            .step(req, place)
            .await
            .expect("step")
    }

    /// The lease ids queued for `name`, in queue order.
    async fn queued(harness: &SqlHarness, name: &lockkit_core::LockName) -> Vec<String> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT lease_id FROM \"{}_queue\" WHERE lock_name = $1 ORDER BY seq",
            harness.table().table()
        )))
        .bind(name.as_str())
        .fetch_all(harness.pg())
        .await
        .expect("read the queue")
    }

    /// A release NOTIFYs only when a waiter was refused while it was held:
    /// the first refusal sets the row's `waiters` flag, a grant clears it
    /// (nobody else queued), and the notification names the head of the
    /// queue. Notifications arrive in commit order, so the first one heard
    /// must be the contended lock's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_release_notifies_only_when_someone_was_refused() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let mut listener = sqlx::postgres::PgListener::connect_with(harness.pg())
            .await
            .expect("listener");
        listener
            .listen(&lockkit_sql::postgres::channel(harness.table()))
            .await
            .expect("LISTEN");
        let (a, b) = (harness.client().await, harness.client().await);
        let ttl = Duration::from_secs(30);

        let quiet = unique_name("quiet");
        let lease = a
            .try_acquire(&request(&quiet, "a", ttl))
            .await
            .expect("try")
            .expect("free");
        // A refused try (it does not wait) marks nothing.
        assert!(
            b.try_acquire(&request(&quiet, "b", ttl))
                .await
                .expect("try")
                .is_none()
        );
        assert_eq!(waiters_flag(&harness, &quiet).await, Some(false));
        assert!(a.release(&lease).await.expect("release"));

        let busy = unique_name("busy");
        let lease = a
            .try_acquire(&request(&busy, "a", ttl))
            .await
            .expect("try")
            .expect("free");
        let waiter = request(&busy, "b", ttl);
        let mut place = None;
        for _ in 0..2 {
            assert!(step(&*b, &waiter, &mut place).await.is_none());
        }
        assert_eq!(
            waiters_flag(&harness, &busy).await,
            Some(true),
            "a refusal marks the row"
        );
        assert_eq!(
            queued(&harness, &busy).await,
            [waiter.lease_id.as_str()],
            "two steps, one queue entry"
        );
        assert!(a.release(&lease).await.expect("release"));
        let heard = listener.recv().await.expect("a notification");
        assert_eq!(
            heard.payload(),
            format!("{busy}\n{}", waiter.lease_id),
            "the uncontended release must not have notified; this one names the head"
        );

        let next = step(&*b, &waiter, &mut place)
            .await
            .expect("the head's turn");
        assert!(next.token > lease.token);
        assert_eq!(
            waiters_flag(&harness, &busy).await,
            Some(false),
            "a grant with nobody else queued clears the flag"
        );
        assert!(
            queued(&harness, &busy).await.is_empty(),
            "the grant left the queue"
        );
        assert!(b.release(&next).await.expect("release"));
    }

    /// FIFO across clients: a newcomer does not barge past a queued waiter
    /// (neither a try nor a waiter's step), a grant to the head keeps the
    /// flag set while others queue, and a head that leaves passes the turn
    /// to the next waiter by name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_queue_serves_in_order_and_a_leaving_head_passes_the_turn() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let mut listener = sqlx::postgres::PgListener::connect_with(harness.pg())
            .await
            .expect("listener");
        listener
            .listen(&lockkit_sql::postgres::channel(harness.table()))
            .await
            .expect("LISTEN");
        let (a, b, c, d) = (
            harness.client().await,
            harness.client().await,
            harness.client().await,
            harness.client().await,
        );
        let ttl = Duration::from_secs(30);
        let name = unique_name("line");
        let held = a
            .try_acquire(&request(&name, "a", ttl))
            .await
            .expect("try")
            .expect("free");
        let (rb, rc, rd) = (
            request(&name, "b", ttl),
            request(&name, "c", ttl),
            request(&name, "d", ttl),
        );
        let (mut pb, mut pc, mut pd) = (None, None, None);
        assert!(step(&*b, &rb, &mut pb).await.is_none());
        assert!(step(&*c, &rc, &mut pc).await.is_none());
        assert!(a.release(&held).await.expect("release"));
        let heard = listener.recv().await.expect("a notification");
        assert_eq!(heard.payload(), format!("{name}\n{}", rb.lease_id));

        // The lock is free, but b is the head: nobody else gets it.
        assert!(
            d.try_acquire(&request(&name, "d-try", ttl))
                .await
                .expect("try")
                .is_none(),
            "a try barged past the queue"
        );
        assert!(
            step(&*d, &rd, &mut pd).await.is_none(),
            "a step barged past the queue"
        );
        assert!(step(&*c, &rc, &mut pc).await.is_none(), "c is not the head");

        // b leaves without taking its turn: c, the next, is told.
        b.abandon(&rb).await.expect("abandon");
        let heard = listener.recv().await.expect("a notification");
        assert_eq!(heard.payload(), format!("{name}\n{}", rc.lease_id));
        let lease_c = step(&*c, &rc, &mut pc).await.expect("c's turn");
        assert_eq!(
            waiters_flag(&harness, &name).await,
            Some(true),
            "d still waits: the next release must notify"
        );
        assert_eq!(queued(&harness, &name).await, [rd.lease_id.as_str()]);
        assert!(c.release(&lease_c).await.expect("release"));
        let heard = listener.recv().await.expect("a notification");
        assert_eq!(heard.payload(), format!("{name}\n{}", rd.lease_id));
        let lease_d = step(&*d, &rd, &mut pd).await.expect("d's turn");
        assert!(lease_d.token > lease_c.token && lease_c.token > held.token);
        assert!(d.release(&lease_d).await.expect("release"));
    }

    /// A waiter that vanished without leaving (a crashed process) blocks
    /// the queue only until its entry expires, and `cleanup_expired`
    /// removes the entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_dead_waiters_entry_expires() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let short = Arc::new(
            lockkit_sql::postgres::connect_with(
                harness.url(),
                SqlOptions {
                    table: harness.table().clone(),
                    queue_entry_ttl: Duration::from_millis(200),
                    ..SqlOptions::default()
                },
            )
            .await
            .expect("backend"),
        ) as Arc<dyn LockBackend>;
        let other = harness.client().await;
        let ttl = Duration::from_secs(30);
        let name = unique_name("dead-waiter");
        let held = other
            .try_acquire(&request(&name, "holder", ttl))
            .await
            .expect("try")
            .expect("free");
        let dead = request(&name, "dead", ttl);
        assert!(step(&*short, &dead, &mut None).await.is_none());
        assert!(other.release(&held).await.expect("release"));
        assert!(
            other
                .try_acquire(&request(&name, "other", ttl))
                .await
                .expect("try")
                .is_none(),
            "the dead waiter is still the head while its entry lives"
        );
        // Wait for the entry to expire by the database's clock.
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let live: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM \"{}_queue\" WHERE lock_name = $1 AND expires_at > now()",
                harness.table().table()
            )))
            .bind(name.as_str())
            .fetch_one(harness.pg())
            .await
            .expect("read the queue");
            if live == 0 {
                break;
            }
            assert!(Instant::now() < give_up, "the queue entry never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lease = other
            .try_acquire(&request(&name, "other", ttl))
            .await
            .expect("try")
            .expect("free once the dead entry expired");
        other.cleanup_expired().await.expect("cleanup");
        assert!(
            queued(&harness, &name).await.is_empty(),
            "cleanup removes expired entries"
        );
        assert!(other.release(&lease).await.expect("release"));
    }

    /// `queue_entry_ttl` is checked before any I/O.
    #[tokio::test]
    async fn a_too_short_queue_entry_ttl_is_rejected() {
        let err = lockkit_sql::postgres::connect_with(
            "postgres://nobody@127.0.0.1:1/none",
            SqlOptions {
                queue_entry_ttl: Duration::from_millis(5),
                ..SqlOptions::default()
            },
        )
        .await
        .expect_err("rejected");
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    }

    async fn connections_of(harness: &SqlHarness, app: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(app)
            .fetch_one(harness.pg())
            .await
            .expect("pg_stat_activity")
    }

    /// One task's statements reuse one connection: 200 acquire/release
    /// pairs leave one lane's connection open (through the sqlx pool,
    /// each statement's return ping kept its connection busy and the next
    /// statement opened another, up to the pool's 8).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sequential_statements_reuse_one_connection() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let app = format!("lk_lanes_{}", lockkit_tests::server::random_suffix());
        let options = SqlOptions {
            table: harness.table().clone(),
            ..SqlOptions::default()
        };
        let backend = lockkit_sql::postgres::connect_with(
            &format!("{}?application_name={app}", harness.url()),
            options,
        )
        .await
        .expect("backend");
        let name = unique_name("lanes");
        for _ in 0..200 {
            let lease = backend
                .try_acquire(&request(&name, "o", Duration::from_secs(30)))
                .await
                .expect("try")
                .expect("free");
            assert!(backend.release(&lease).await.expect("release"));
        }
        // One lane, plus the idle pool connection that created the schema.
        let open = connections_of(&harness, &app).await;
        assert!(open <= 2, "{open} connections for one task's statements");
    }

    /// A statement whose future is dropped does not leave its connection
    /// for the next statement (it could still be waiting for the reply):
    /// the connection is closed, and the next attempt runs on a new one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_dropped_statement_closes_its_connection() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let app = format!("lk_cancel_{}", lockkit_tests::server::random_suffix());
        let options = SqlOptions {
            table: harness.table().clone(),
            ..SqlOptions::default()
        };
        let backend = Arc::new(
            lockkit_sql::postgres::connect_with(
                &format!("{}?application_name={app}", harness.url()),
                options,
            )
            .await
            .expect("backend"),
        );
        let holder = harness.client().await;
        let name = unique_name("cancel");
        let held = holder
            .try_acquire(&request(&name, "holder", Duration::from_secs(30)))
            .await
            .expect("try")
            .expect("free");
        // Lock the row, so that the waiter's mark of it blocks.
        let mut blocker = harness.pg().begin().await.expect("begin");
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *blocker)
            .await
            .expect("pid");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM \"{}\" WHERE lock_name = $1 FOR UPDATE",
            harness.table().table()
        )))
        .bind(name.as_str())
        .execute(&mut *blocker)
        .await
        .expect("row lock");
        let waiter = request(&name, "waiter", Duration::from_secs(30));
        let attempt = {
            let (backend, waiter) = (Arc::clone(&backend), waiter.clone());
            tokio::spawn(async move { step(&*backend, &waiter, &mut None).await })
        };
        let blocked_pid = |harness: &SqlHarness| {
            let app = app.clone();
            let pg = harness.pg().clone();
            async move {
                sqlx::query_scalar::<_, i32>(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND $2 = ANY(pg_blocking_pids(pid))",
                )
                .bind(app)
                .bind(pid)
                .fetch_optional(&pg)
                .await
                .expect("pg_stat_activity")
            }
        };
        let give_up = Instant::now() + Duration::from_secs(30);
        let victim = loop {
            if let Some(victim) = blocked_pid(&harness).await {
                break victim;
            }
            assert!(Instant::now() < give_up, "the attempt never blocked");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        attempt.abort();
        assert!(attempt.await.expect_err("aborted").is_cancelled());
        blocker.commit().await.expect("unlock");
        // The dropped statement's connection goes away...
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let alive: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
                    .bind(victim)
                    .fetch_one(harness.pg())
                    .await
                    .expect("pg_stat_activity");
            if alive == 0 {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "the dropped statement's connection stayed open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ...and the backend goes on, on a new one. (The server finished
        // the statement before it noticed the closed connection, so the
        // waiter's queue entry exists; the driver abandons a dropped
        // request, as here.)
        backend.abandon(&waiter).await.expect("abandon");
        assert!(holder.release(&held).await.expect("release"));
        let lease = backend
            .try_acquire(&request(&name, "waiter", Duration::from_secs(30)))
            .await
            .expect("try")
            .expect("free");
        assert!(backend.release(&lease).await.expect("release"));
    }

    /// A table created before the `waiters` flag existed gets the column
    /// at start-up and then works as a new one; its rows are kept.
    /// A fresh table has no index on `expires_at`, and connecting to a
    /// table of an earlier release drops the one it had (it made every
    /// renewal a non-HOT update and lured the grant's purge into scanning
    /// it); the table's rows and the primary key stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_expires_at_index_of_earlier_releases_is_dropped() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let indexes = |table: String| {
            format!(
                "SELECT indexrelid::regclass::text FROM pg_index \
                 WHERE indrelid = to_regclass('\"{table}\"') ORDER BY 1"
            )
        };
        let t = harness.table().table().to_owned();
        assert_eq!(
            raw_sql(&harness, indexes(t.clone())).await,
            [format!("{t}_pkey")],
            "a fresh table has its primary key only"
        );
        raw_sql(
            &harness,
            format!("CREATE INDEX \"{t}_expires_at\" ON \"{t}\" (expires_at)"),
        )
        .await;
        let name = unique_name("indexed");
        let holder = harness.client().await;
        let held = holder
            .try_acquire(&request(&name, "holder", Duration::from_secs(60)))
            .await
            .expect("try")
            .expect("free");
        let options = SqlOptions {
            table: harness.table().clone(),
            ..SqlOptions::default()
        };
        let upgraded = lockkit_sql::postgres::connect_with(harness.url(), options)
            .await
            .expect("connect drops the index");
        assert_eq!(
            raw_sql(&harness, indexes(t.clone())).await,
            [format!("{t}_pkey")]
        );
        let info = upgraded
            .current(&name)
            .await
            .expect("current")
            .expect("the held row stays");
        assert_eq!(
            (info.lease_id, info.token),
            (held.lease_id.clone(), held.token)
        );
        assert!(holder.release(&held).await.expect("release"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_table_from_before_the_waiters_flag_is_upgraded() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let table = fresh_table("old");
        for ddl in [
            format!(
                "CREATE TABLE \"{0}\" (lock_name TEXT NOT NULL PRIMARY KEY, owner_id TEXT NOT NULL, \
                 lease_id TEXT NOT NULL, fence BIGINT NOT NULL, \
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now(), expires_at TIMESTAMPTZ NOT NULL)",
                table.table()
            ),
            format!(
                "CREATE TABLE \"{0}_fence\" (lock_name TEXT NOT NULL PRIMARY KEY, fence BIGINT NOT NULL)",
                table.table()
            ),
            format!(
                "INSERT INTO \"{0}\" VALUES ('kept', 'old', '{1}', 7, now(), now() + interval '1 hour')",
                table.table(),
                lockkit_core::LeaseId::random().as_str()
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(harness.pg())
                .await
                .expect("old schema");
        }
        let options = SqlOptions {
            table: table.clone(),
            ..SqlOptions::default()
        };
        let backend = lockkit_sql::postgres::connect_with(harness.url(), options)
            .await
            .expect("connect upgrades the table");
        let kept = lockkit_core::LockName::new("kept").expect("name");
        let info = backend
            .current(&kept)
            .await
            .expect("current")
            .expect("the old row is kept");
        assert_eq!(info.owner, "old");
        assert!(
            step(
                &backend,
                &request(&kept, "new", Duration::from_secs(30)),
                &mut None
            )
            .await
            .is_none()
        );
        let flag: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT waiters FROM \"{}\" WHERE lock_name = 'kept'",
            table.table()
        )))
        .fetch_one(harness.pg())
        .await
        .expect("the waiters column exists");
        assert!(flag);
    }

    /// An attempt that reads the row of a holder whose release is
    /// committing at that moment cannot mark it (the row is gone) and so
    /// will not be notified: it must try again at once and get the lock,
    /// not report it held. The release is held open in a transaction until
    /// the attempt is seen blocked on its row lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_attempt_racing_a_release_retries_at_once() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let (a, b) = (harness.client().await, harness.client().await);
        let ttl = Duration::from_secs(30);
        let name = unique_name("race");
        let first = a
            .try_acquire(&request(&name, "a", ttl))
            .await
            .expect("try")
            .expect("free");

        let mut release = harness.pg().begin().await.expect("begin");
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *release)
            .await
            .expect("pid");
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM \"{}\" WHERE lock_name = $1",
            harness.table().table()
        )))
        .bind(name.as_str())
        .execute(&mut *release)
        .await
        .expect("delete");
        assert_eq!(deleted.rows_affected(), 1);

        let attempt = {
            let name = name.clone();
            tokio::spawn(async move { step(&*b, &request(&name, "b", ttl), &mut None).await })
        };
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(pid)
            .fetch_one(harness.pg())
            .await
            .expect("pg_stat_activity");
            if blocked > 0 {
                break;
            }
            assert!(
                !attempt.is_finished(),
                "the attempt finished without meeting the open release"
            );
            assert!(
                Instant::now() < give_up,
                "the attempt never blocked on the release"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.commit().await.expect("commit the release");
        let lease = attempt
            .await
            .expect("task")
            .expect("the attempt that raced the release must be granted");
        assert!(lease.token > first.token);
    }

    /// Many waiters on many names share one LISTEN connection per backend
    /// instance; killing it falls back to polling and re-listening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiters_share_one_listen_connection_and_survive_its_loss() {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        let app = format!("lk_listen_{}", lockkit_tests::server::random_suffix());
        let url = format!("{}?application_name={app}", harness.url());
        let options = SqlOptions {
            table: harness.table().clone(),
            ..SqlOptions::default()
        };
        let waiter_backend = Arc::new(
            lockkit_sql::postgres::connect_with(&url, options)
                .await
                .expect("backend"),
        );
        let holder = harness.client().await;
        let names: Vec<_> = (0..12).map(|_| unique_name("listen")).collect();
        let mut held = Vec::new();
        for name in &names {
            held.push(
                holder
                    .try_acquire(&request(name, "holder", Duration::from_secs(30)))
                    .await
                    .expect("try")
                    .expect("free"),
            );
        }
        let mut waiters = Vec::new();
        for name in &names {
            let (backend, name) = (Arc::clone(&waiter_backend), name.clone());
            waiters.push(tokio::spawn(async move {
                backend
                    .acquire(
                        &request(&name, "waiter", Duration::from_secs(30)),
                        Some(Instant::now() + Duration::from_secs(20)),
                    )
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let listeners: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query ILIKE 'LISTEN%'",
        )
        .bind(&app)
        .fetch_one(harness.pg())
        .await
        .expect("pg_stat_activity");
        assert_eq!(
            listeners, 1,
            "one LISTEN connection for all waiters of a backend"
        );
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND query ILIKE 'LISTEN%'",
        )
        .bind(&app)
        .fetch_one(harness.pg())
        .await
        .expect("terminate the LISTEN connection");
        assert_eq!(killed, 1);
        for lease in &held {
            assert!(holder.release(lease).await.expect("release"));
        }
        for waiter in waiters {
            let lease = waiter
                .await
                .expect("task")
                .expect("every waiter still gets its lock");
            assert!(waiter_backend.release(&lease).await.expect("release"));
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn awkward_names_and_owners_survive_the_grant_batch() {
        super::awkward_names_and_owners_survive_the_grant_batch(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn processes_race_on_an_empty_database() {
        super::processes_race_on_an_empty_database(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_single_row_table_becomes_one_row_per_permit() {
        super::a_single_row_table_becomes_one_row_per_permit(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn client_clock_skew_changes_nothing() {
        super::client_clock_skew_changes_nothing(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn killed_holder_connection_keeps_exclusion() {
        super::killed_holder_connection_keeps_exclusion(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn wrong_password_is_a_configuration_error() {
        super::wrong_password_is_a_configuration_error(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn release_after_killed_connection_frees_the_lock() {
        super::release_after_killed_connection_frees_the_lock(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn unreachable_server_is_transient_at_once() {
        super::unreachable_server_is_transient_at_once(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn tls_from_the_url() {
        super::tls_from_the_url(SqlKind::MySql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stored_rows_high_water_and_periodic_cleanup() {
        super::stored_rows_high_water_and_periodic_cleanup(SqlKind::MySql).await;
    }

    /// A renewal batch longer than one request (`RENEW_CHUNK`), with two
    /// TTLs, renews exactly the leases still held: each renewed row's
    /// expiry moves to its own TTL by the server's clock; a released lease
    /// and one whose name was granted again to another lease come back as
    /// lost, and the other holder's row is untouched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_renewal_batch_renews_exactly_the_leases_still_held() {
        const HELD: usize = lockkit_sql::mysql::RENEW_CHUNK + 20;
        const SHORT: Duration = Duration::from_secs(20);
        let harness = SqlHarness::start(SqlKind::MySql).await;
        let backend = harness.client().await;
        let mut batch = Vec::with_capacity(HELD);
        for i in 0..HELD {
            let name = unique_name(&format!("renew-{i}"));
            let lease = backend
                .try_acquire(&request(&name, "holder", SHORT))
                .await
                .expect("try")
                .expect("free");
            let ttl = Duration::from_secs(if i % 2 == 0 { 60 } else { 90 });
            batch.push((lease, ttl));
        }
        let (released, regranted) = (batch[3].0.clone(), batch[4].0.clone());
        assert!(backend.release(&released).await.expect("release"));
        assert!(backend.release(&regranted).await.expect("release"));
        let other = backend
            .try_acquire(&request(&regranted.name, "other", SHORT))
            .await
            .expect("try")
            .expect("free again");

        // The server's clock in µs since the epoch, and every row's
        // expiry in the same unit, by lease id.
        let t = harness.table().table().to_owned();
        let micros = |column: &str| {
            format!("CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) AS CHAR)")
        };
        let server_now = async || -> i64 {
            raw_sql(&harness, format!("SELECT {}", micros("UTC_TIMESTAMP(6)")))
                .await
                .first()
                .and_then(|now| now.parse().ok())
                .expect("the server's time")
        };
        let before = server_now().await;
        let results = backend.extend_many(&batch).await;
        let after = server_now().await;
        assert_eq!(results.len(), HELD);
        for (i, result) in results.iter().enumerate() {
            match i {
                3 | 4 => assert!(
                    matches!(result, Err(Error::Lost { .. })),
                    "lease {i} is not held: {result:?}"
                ),
                _ => assert!(result.is_ok(), "lease {i}: {result:?}"),
            }
        }
        let rows = raw_sql(
            &harness,
            format!(
                "SELECT CONCAT(lease_id, ' ', {}) FROM `{t}`",
                micros("expires_at")
            ),
        )
        .await;
        let expiry: std::collections::HashMap<String, i64> = rows
            .iter()
            .filter_map(|row| row.split_once(' '))
            .map(|(lease, at)| (lease.to_owned(), at.parse().expect("µs")))
            .collect();
        for (i, (lease, ttl)) in batch.iter().enumerate() {
            let stored = expiry.get(lease.lease_id.as_str()).copied();
            match i {
                3 | 4 => assert_eq!(stored, None, "lease {i} has no row"),
                _ => {
                    let renewed_at = stored.expect("a renewed row")
                        - i64::try_from(ttl.as_micros()).expect("ttl");
                    assert!(
                        (before..=after).contains(&renewed_at),
                        "lease {i}: expiry minus its new TTL ({renewed_at} µs) lies outside \
                         the renewal ({before}..={after} µs)"
                    );
                }
            }
        }
        let kept = expiry
            .get(other.lease_id.as_str())
            .copied()
            .expect("the other holder's row");
        assert!(
            kept <= before + i64::try_from(SHORT.as_micros()).expect("ttl"),
            "the other holder's row is untouched"
        );
        let mut all = batch
            .into_iter()
            .map(|(lease, _)| lease)
            .collect::<Vec<_>>();
        all.push(other);
        for lease in &all {
            let _ = backend.release(lease).await;
        }
    }
}
