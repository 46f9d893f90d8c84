//! The lease value stored under a lock key, read back for `current`/`list`.

use lockkit_core::spi::system_time_from_millis;
use lockkit_core::{Error, FencingToken, LeaseId, LockInfo, LockName, Result};

use crate::error::KIND;

/// Decodes `<lease id>\n<token>\n<acquired ms>\n<owner>` plus the key's
/// remaining TTL and the server's time into a [`LockInfo`].
///
/// `pttl_ms` is the key's `PTTL` (-1: no expiry, which lockkit never
/// writes; reported as `expires_at: None`).
///
/// # Errors
/// [`Error::Backend`] when the value is not in lockkit's format (a foreign
/// key under the prefix).
pub(crate) fn decode(name: LockName, value: &[u8], pttl_ms: i64, now_ms: i64) -> Result<LockInfo> {
    let bad = |why: &str| {
        Error::backend(
            KIND,
            format!("the value stored for lock {name:?} is not a lockkit lease ({why})"),
            None,
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
    let mut parts = text.splitn(4, '\n');
    let (Some(lease_id), Some(token), Some(acquired), Some(owner)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("missing fields"));
    };
    let lease_id = LeaseId::parse(lease_id).map_err(|_| bad("lease id"))?;
    let token: u64 = token.parse().map_err(|_| bad("token"))?;
    let acquired: i64 = acquired.parse().map_err(|_| bad("acquired time"))?;
    let expires_at =
        (pttl_ms >= 0).then(|| system_time_from_millis(now_ms.saturating_add(pttl_ms)));
    Ok(LockInfo::new(
        name,
        owner,
        lease_id,
        FencingToken::new(token),
        system_time_from_millis(acquired),
        expires_at,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn decodes_and_rejects() {
        let name = LockName::new("n").unwrap();
        let info = decode(
            name.clone(),
            b"abc\n7\n1000\nowner with \n? no: spaces \xF0\x9F\x94\x92",
            500,
            2000,
        )
        .unwrap();
        assert_eq!(info.token.get(), 7);
        assert_eq!(info.owner, "owner with \n? no: spaces 🔒");
        assert_eq!(
            info.acquired_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1)
        );
        assert_eq!(
            info.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(2500))
        );
        assert!(decode(name.clone(), b"abc\n7\n1000", 1, 1).is_err());
        assert!(decode(name, b"abc\nx\n1000\no", 1, 1).is_err());
    }
}
