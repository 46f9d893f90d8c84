//! The fault suite on the SQL backends: SQLite (a file shared by taker
//! processes), and private Postgres and MariaDB servers (a proxy in front
//! for network faults; stopped, killed and restarted for server faults).
//! Each test records its outcome for `docs/RELIABILITY.md`
//! (`lockkit_tests::faults::report`).

use lockkit_tests::faults::scenario::{self, Target};

const TAKER: &str = env!("CARGO_BIN_EXE_taker");

async fn sqlite() -> (tempfile::TempDir, Target) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/locks.db", dir.path().display());
    let target = Target::new("sqlite", url, TAKER).await;
    (dir, target)
}

lockkit_tests::fault_tests! {
    sqlite_holder_paused: sqlite().await => |(_dir, t)| scenario::holder_paused(&t);
    sqlite_holder_killed: sqlite().await => |(_dir, t)| scenario::holder_killed(&t);
    sqlite_clock_jump: sqlite().await => |(_dir, t)| scenario::clock_jump(&t);
    sqlite_contended_counter: sqlite().await => |(_dir, t)| scenario::contended_counter(&t);
}

/// One module of fault tests for a SQL server fixture: `$server` has
/// `start_private()`, `url()`, `port()`, `signal()` and
/// `kill_and_restart()`.
macro_rules! sql_server_faults {
    ($module:ident, $feature:literal, $backend:literal, $fixture:ident, $server:ident) => {
        #[cfg(feature = $feature)]
        mod $module {
            use std::sync::{Arc, OnceLock};

            use lockkit_core::LockBackend;
            use lockkit_tests::$fixture::$server;
            use lockkit_tests::faults::scenario::{self, Proxied, ServerControl, Target};
            use lockkit_tests::sql_harness::fresh_table;

            use super::TAKER;

            fn url(server: &$server) -> String {
                format!("{}?table={}", server.url(), fresh_table("fault"))
            }

            /// A private server shared by this module's tests that do not
            /// stop it (never one named by `LOCKKIT_TEST_*_URL`: the proxy
            /// needs it on 127.0.0.1).
            fn server() -> &'static $server {
                static SERVER: OnceLock<$server> = OnceLock::new();
                SERVER.get_or_init($server::start_private)
            }

            async fn shared() -> (Target, u16) {
                let s = tokio::task::spawn_blocking(server)
                    .await
                    .expect("start the shared server");
                let port = s.port().expect("a private server has a port");
                (Target::new($backend, url(s), TAKER).await, port)
            }

            async fn proxied() -> (Proxied, Arc<dyn LockBackend>) {
                let (t, port) = shared().await;
                let inspector = t.inspector().await;
                (t.proxied(port).await, inspector)
            }

            struct Control($server);

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
                let s = tokio::task::spawn_blocking($server::start_private)
                    .await
                    .expect("start a private server");
                (Target::new($backend, url(&s), TAKER).await, Control(s))
            }

            lockkit_tests::fault_tests! {
                holder_paused: shared().await => |(t, _)| scenario::holder_paused(&t);
                holder_killed: shared().await => |(t, _)| scenario::holder_killed(&t);
                clock_jump: shared().await => |(t, _)| scenario::clock_jump(&t);
                contended_counter: shared().await => |(t, _)| scenario::contended_counter(&t);
                replies_delayed: proxied().await => |(p, _)| scenario::replies_delayed(&p);
                cut_mid_hold: proxied().await => |(p, _)| scenario::cut_mid_hold(&p);
                cut_mid_acquire: proxied().await => |(p, inspector)| scenario::cut_mid_acquire(&p, inspector);
                server_paused: private().await => |(t, mut c)| scenario::server_paused(&t, &mut c);
                server_restarted: private().await => |(t, mut c)| scenario::server_restarted(&t, &mut c);
            }
        }
    };
}

sql_server_faults!(postgres, "postgres", "postgres", postgres, PostgresServer);
sql_server_faults!(mariadb, "mysql", "mariadb", mysql, MySqlServer);
