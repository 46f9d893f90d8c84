//! etcd with authentication enabled, and etcd over TLS.
#![cfg(feature = "etcd")]

use std::time::Duration;

use lockkit_core::conformance::unique_name;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::{Error, LockBackend};
use lockkit_tests::etcd::fixture::make_test_certificates;
use lockkit_tests::etcd::{EtcdCluster, connect};

const PASSWORD: &str = "s3cret-Pa55";
const WRONG: &str = "hunter2-wrong";

/// Acquires and releases one lock, proving the connection works end to end.
async fn round_trip(backend: &dyn LockBackend) {
    let name = unique_name("etcd-security");
    let req = AcquireRequest::new(name, "secure", Duration::from_secs(5)).expect("request");
    let lease = backend.try_acquire(&req).await.expect("try").expect("free");
    assert!(backend.release(&lease).await.expect("release"));
}

fn assert_redacted_configuration_error(err: &Error, secret: &str) {
    let message = err.to_string();
    assert!(
        matches!(err, Error::Configuration { .. }),
        "expected a configuration error, got {err:?}"
    );
    assert!(!message.contains(secret), "the password leaked: {message}");
    assert!(
        !format!("{err:?}").contains(secret),
        "the password leaked: {err:?}"
    );
}

/// With authentication on: the right password works; a wrong one is a
/// clear configuration error with the password redacted, through the
/// backend and through `lockkit::connect`; no credentials are refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_enabled_server() {
    let server = EtcdCluster::start(1, 500);
    let address = server.members()[0].address();
    {
        let mut admin = connect(&server.url()).await.client();
        admin
            .user_add("root", PASSWORD, None)
            .await
            .expect("add root");
        admin
            .user_grant_role("root", "root")
            .await
            .expect("grant root");
        admin.auth_enable().await.expect("enable auth");
    }

    let good = format!("etcd://root:{PASSWORD}@{address}");
    let backend = lockkit_etcd::connect(&good).await.expect("right password");
    round_trip(&backend).await;
    let facade = lockkit::connect(&good)
        .await
        .expect("facade, right password");
    assert_eq!(facade.kind(), "etcd");
    round_trip(&*facade).await;

    let bad = format!("etcd://root:{WRONG}@{address}");
    let err = lockkit_etcd::connect(&bad)
        .await
        .expect_err("wrong password");
    assert_redacted_configuration_error(&err, WRONG);
    let message = err.to_string();
    assert!(
        message.contains("root:***@"),
        "shows the redacted URL: {message}"
    );
    assert!(
        message.contains("authentication failed"),
        "says why: {message}"
    );
    let err = lockkit::connect(&bad)
        .await
        .expect_err("facade, wrong password");
    assert_redacted_configuration_error(&err, WRONG);

    let options = lockkit_etcd::EtcdOptions::new().credentials("root", WRONG);
    let err = lockkit_etcd::connect_with(&format!("etcd://{address}"), options)
        .await
        .expect_err("wrong password in options");
    assert_redacted_configuration_error(&err, WRONG);

    let err = lockkit_etcd::connect(&format!("etcd://{address}"))
        .await
        .expect_err("no credentials");
    assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
}

/// `etcds://` with the CA that signed the server's certificate works; the
/// same server without trusting that CA is refused. Without the `tls`
/// feature, `etcds://` is a configuration error naming the feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server() {
    let certs = tempfile::tempdir().expect("temporary directory");
    let (ca, server_tls) = make_test_certificates(certs.path());
    let server = EtcdCluster::start_tls(server_tls);
    let address = server.members()[0].address();
    let url = format!("etcds://{address}?ca={}", ca.display());
    if !lockkit_etcd::TLS_SUPPORTED {
        let err = lockkit_etcd::connect(&url)
            .await
            .expect_err("no TLS support");
        assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
        assert!(err.to_string().contains("`tls` feature"), "{err}");
        return;
    }
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let backend = loop {
        match lockkit_etcd::connect(&url).await {
            Ok(backend) => break backend,
            Err(err) if err.is_retryable() && tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("connect over TLS: {err}"),
        }
    };
    round_trip(&backend).await;

    // Plain gRPC to a TLS port, and TLS without the right CA, both fail.
    let options = lockkit_etcd::EtcdOptions::new().connect_timeout(Duration::from_secs(3));
    let plain = lockkit_etcd::connect_with(&format!("etcd://{address}"), options.clone()).await;
    assert!(plain.is_err(), "plain gRPC to a TLS port must fail");
    let other_ca = tempfile::tempdir().expect("temporary directory");
    let (wrong_ca, _) = make_test_certificates(other_ca.path());
    let untrusted = lockkit_etcd::connect_with(
        &format!("etcds://{address}?ca={}", wrong_ca.display()),
        options,
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a server signed by another CA must be refused"
    );
    let missing = lockkit_etcd::connect(&format!("etcds://{address}?ca=/nonexistent/ca.pem"))
        .await
        .expect_err("missing CA file");
    assert!(
        matches!(missing, Error::Configuration { .. }),
        "{missing:?}"
    );
}
