//! Names are data: hostile names work, invalid input fails before I/O.

use std::sync::Arc;
use std::time::Duration;

use super::{CountingBackend, Harness, LONG_TTL, assert_clean, request, unique_name};
use crate::backend::LockBackend;
use crate::error::Error;
use crate::lease::AcquireRequest;
use crate::locker::Locker;
use crate::name::{LockName, MAX_NAME_BYTES};
use crate::options::LockOptions;
use crate::ttl::MAX_TTL;

/// Names with quotes, SQL, path tricks, wildcards, backslashes, emoji and
/// exactly 255 bytes are stored and returned byte-exact, and are locks of
/// their own. Hostile owner labels are stored byte-exact too.
pub async fn hostile_names_work<H: Harness + ?Sized>(h: &H) {
    let id = unique_name("hostile").into_string();
    let mut names = vec![
        format!("{id}'"),
        format!("{id}\""),
        format!("{id}'; DROP TABLE locks; --"),
        format!("'; DROP TABLE locks; -- {id}"),
        format!("../{id}"),
        format!("..\\..\\{id}"),
        format!("/a/b/{id}"),
        format!("{id} with spaces "),
        format!("{id}%_*?[]^$"),
        format!("{{{id}}}"),
        format!("{id}\\"),
        format!("{id}\\x00\\n"),
        format!("{id} 🔒 ünïcödé ∑"),
        format!("{id}:0"),
    ];
    // Exactly 255 bytes, ending in multi-byte characters.
    let mut long = format!("{id}/");
    while long.len() + '🔒'.len_utf8() <= MAX_NAME_BYTES - 3 {
        long.push('x');
    }
    long.push('🔒');
    while long.len() < MAX_NAME_BYTES {
        long.push('y');
    }
    assert_eq!(long.len(), MAX_NAME_BYTES);
    names.push(long);

    let client = h.client().await;
    let owner = "'; DROP TABLE locks; -- \"owner\" 🔒";
    for raw in &names {
        let name = LockName::new(raw.as_str()).expect("valid hostile name");
        let lease = client
            .try_acquire(&request(&name, owner, LONG_TTL))
            .await
            .expect("try")
            .unwrap_or_else(|| panic!("{raw:?} must be free"));
        let info = client.current(&name).await.expect("current").expect("held");
        assert_eq!(info.name.as_str(), raw.as_str(), "name returned byte-exact");
        assert_eq!(info.owner, owner, "owner returned byte-exact");
        assert!(
            client
                .list()
                .await
                .expect("list")
                .iter()
                .any(|i| i.name.as_str() == raw),
            "{raw:?} is listed"
        );
        let lease = client.extend(&lease, LONG_TTL).await.expect("extend");
        assert!(client.release(&lease).await.expect("release"));
        assert_clean(h, &*client, &name).await;
    }
}

/// Empty, 256-byte and control-character names fail with `InvalidName`
/// before any call reaches the backend.
pub async fn invalid_names_rejected_before_io<H: Harness + ?Sized>(h: &H) {
    let counting = CountingBackend::wrap(h.client().await);
    let locker =
        Locker::new(Arc::clone(&counting) as Arc<dyn LockBackend>, "validator").expect("locker");
    let too_long = "x".repeat(MAX_NAME_BYTES + 1);
    let multibyte_too_long = "é".repeat(MAX_NAME_BYTES / 2 + 1);
    for bad in [
        "",
        too_long.as_str(),
        multibyte_too_long.as_str(),
        "nul\0byte",
        "new\nline",
        "tab\there",
        "\u{7f}",
    ] {
        assert!(
            matches!(LockName::new(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(locker.acquire(bad).await, Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(
                locker.try_acquire(bad).await,
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        counting.calls(),
        0,
        "invalid names must be rejected before any I/O"
    );
    let ok = "x".repeat(MAX_NAME_BYTES);
    assert!(LockName::new(ok).is_ok(), "255 bytes is allowed");
}

/// Zero and over-long TTLs fail with `InvalidTtl`, and invalid owners and
/// options with `InvalidInput`, before any I/O.
pub async fn invalid_ttl_and_owner_rejected_before_io<H: Harness + ?Sized>(h: &H) {
    let counting = CountingBackend::wrap(h.client().await);
    let backend = Arc::clone(&counting) as Arc<dyn LockBackend>;
    let name = unique_name("bad-input");
    let locker = Locker::new(Arc::clone(&backend), "validator").expect("locker");
    for ttl in [
        Duration::ZERO,
        Duration::from_micros(10),
        MAX_TTL + Duration::from_secs(1),
    ] {
        let opts = LockOptions::new().ttl(ttl);
        assert!(
            matches!(
                locker.acquire_with(&name, &opts).await,
                Err(Error::InvalidTtl { .. })
            ),
            "{ttl:?}"
        );
        assert!(
            matches!(
                locker.try_acquire_with(&name, &opts).await,
                Err(Error::InvalidTtl { .. })
            ),
            "{ttl:?}"
        );
        assert!(matches!(
            AcquireRequest::new(name.clone(), "o", ttl),
            Err(Error::InvalidTtl { .. })
        ));
        assert!(matches!(
            locker.clone().with_options(opts),
            Err(Error::InvalidTtl { .. })
        ));
    }
    for owner in ["", "bad\nowner"] {
        assert!(
            matches!(
                Locker::new(Arc::clone(&backend), owner),
                Err(Error::InvalidInput { .. })
            ),
            "{owner:?}"
        );
    }
    let bad_renewal = LockOptions::new()
        .ttl(Duration::from_secs(1))
        .renewal(crate::options::Renewal::Every(Duration::from_secs(2)));
    assert!(matches!(
        locker.acquire_with(&name, &bad_renewal).await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(
        counting.calls(),
        0,
        "invalid input must be rejected before any I/O"
    );

    let guard = locker
        .acquire_with(&name, &LockOptions::new().ttl(LONG_TTL))
        .await
        .expect("acquire");
    let calls = counting.calls();
    assert!(matches!(
        guard.extend(Duration::ZERO).await,
        Err(Error::InvalidTtl { .. })
    ));
    assert_eq!(
        counting.calls(),
        calls,
        "an invalid extend must not reach the backend"
    );
    assert!(guard.release().await.expect("release"));
    assert_clean(h, &*h.client().await, &name).await;
}
