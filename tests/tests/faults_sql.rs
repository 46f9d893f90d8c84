//! The fault suite on the SQL backends: SQLite (a file shared by taker
//! processes), and private Postgres and MariaDB servers (a proxy in front
//! for network faults; stopped, killed and restarted for server faults).
//! Each test records its outcome for `docs/RELIABILITY.md`
//! (`lockkit_tests::faults::report`).

use lockkit_tests::faults::report::record;
use lockkit_tests::faults::scenario::{self, Target};

const TAKER: &str = env!("CARGO_BIN_EXE_taker");

async fn sqlite() -> (tempfile::TempDir, Target) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/locks.db", dir.path().display());
    let target = Target::new("sqlite", url, TAKER).await;
    (dir, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holder_paused() {
    let (_dir, t) = sqlite().await;
    record(&scenario::holder_paused(&t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holder_killed() {
    let (_dir, t) = sqlite().await;
    record(&scenario::holder_killed(&t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_clock_jump() {
    let (_dir, t) = sqlite().await;
    record(&scenario::clock_jump(&t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_contended_counter() {
    let (_dir, t) = sqlite().await;
    record(&scenario::contended_counter(&t).await);
}

#[cfg(feature = "postgres")]
mod postgres {
    use lockkit_tests::faults::report::record;
    use lockkit_tests::faults::scenario::{self, ServerControl, Target};
    use lockkit_tests::postgres::{PostgresServer, server};
    use lockkit_tests::sql_harness::fresh_table;

    use super::TAKER;

    const BACKEND: &str = "postgres";

    fn url(server: &PostgresServer) -> String {
        format!("{}?table={}", server.url(), fresh_table("fault"))
    }

    async fn shared() -> (Target, u16) {
        let s = server();
        let port = s.port().expect("the fault suite starts its own Postgres");
        (Target::new(BACKEND, url(s), TAKER).await, port)
    }

    struct Control(PostgresServer);

    impl ServerControl for Control {
        fn pause(&mut self) {
            self.0.signal_all("STOP");
        }
        fn resume(&mut self) {
            self.0.signal_all("CONT");
        }
        fn kill_and_restart(&mut self) {
            self.0.kill_and_restart();
        }
    }

    async fn private() -> (Target, Control) {
        let s = tokio::task::spawn_blocking(PostgresServer::start_private)
            .await
            .expect("start a private Postgres");
        (Target::new(BACKEND, url(&s), TAKER).await, Control(s))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holder_paused() {
        record(&scenario::holder_paused(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holder_killed() {
        record(&scenario::holder_killed(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clock_jump() {
        record(&scenario::clock_jump(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contended_counter() {
        record(&scenario::contended_counter(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_delayed() {
        let (t, port) = shared().await;
        record(&scenario::replies_delayed(&t.proxied(port).await).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_mid_hold() {
        let (t, port) = shared().await;
        record(&scenario::cut_mid_hold(&t.proxied(port).await).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_mid_acquire() {
        let (t, port) = shared().await;
        let inspector = t.inspector().await;
        record(&scenario::cut_mid_acquire(&t.proxied(port).await, inspector).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_paused() {
        let (t, mut control) = private().await;
        record(&scenario::server_paused(&t, &mut control).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_restarted() {
        let (t, mut control) = private().await;
        record(&scenario::server_restarted(&t, &mut control).await);
    }
}

#[cfg(feature = "mysql")]
mod mariadb {
    use lockkit_tests::faults::report::record;
    use lockkit_tests::faults::scenario::{self, ServerControl, Target};
    use lockkit_tests::mysql::{MySqlServer, server};
    use lockkit_tests::sql_harness::fresh_table;

    use super::TAKER;

    const BACKEND: &str = "mariadb";

    fn url(server: &MySqlServer) -> String {
        format!("{}?table={}", server.url(), fresh_table("fault"))
    }

    async fn shared() -> (Target, u16) {
        let s = server();
        let port = s.port().expect("the fault suite starts its own MariaDB");
        (Target::new(BACKEND, url(s), TAKER).await, port)
    }

    struct Control(MySqlServer);

    impl ServerControl for Control {
        fn pause(&mut self) {
            self.0.signal("STOP");
        }
        fn resume(&mut self) {
            self.0.signal("CONT");
        }
        fn kill_and_restart(&mut self) {
            self.0.kill_and_restart();
        }
    }

    async fn private() -> (Target, Control) {
        let s = tokio::task::spawn_blocking(MySqlServer::start_private)
            .await
            .expect("start a private MariaDB");
        (Target::new(BACKEND, url(&s), TAKER).await, Control(s))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holder_paused() {
        record(&scenario::holder_paused(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holder_killed() {
        record(&scenario::holder_killed(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clock_jump() {
        record(&scenario::clock_jump(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contended_counter() {
        record(&scenario::contended_counter(&shared().await.0).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_delayed() {
        let (t, port) = shared().await;
        record(&scenario::replies_delayed(&t.proxied(port).await).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_mid_hold() {
        let (t, port) = shared().await;
        record(&scenario::cut_mid_hold(&t.proxied(port).await).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_mid_acquire() {
        let (t, port) = shared().await;
        let inspector = t.inspector().await;
        record(&scenario::cut_mid_acquire(&t.proxied(port).await, inspector).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_paused() {
        let (t, mut control) = private().await;
        record(&scenario::server_paused(&t, &mut control).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_restarted() {
        let (t, mut control) = private().await;
        record(&scenario::server_restarted(&t, &mut control).await);
    }
}
