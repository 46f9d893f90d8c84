//! Lock names: validated once, then carried as data.

use std::borrow::Borrow;
use std::fmt;

use crate::error::{Error, Result};

/// The longest lock name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// A validated lock name.
///
/// A name is any UTF-8 string of 1..=255 bytes without control characters
/// (no NUL, newline, tab, DEL or C1 controls). Everything else is allowed and
/// kept byte-exact: `/`, spaces, quotes, `'; DROP TABLE locks; --`, emoji.
/// Names are case-sensitive: `Node_B` and `node_b` are two locks.
///
/// Backends never splice a name into SQL, Lua or a key path unescaped; the
/// validation here is about what a name may be, not about escaping.
///
/// ```
/// use lockkit_core::LockName;
///
/// let name = LockName::new("pipelines/node_b")?;
/// assert_eq!(name.as_str(), "pipelines/node_b");
/// assert!(LockName::new("").is_err());
/// assert!(LockName::new("a\0b").is_err());
/// # Ok::<(), lockkit_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(String);

impl LockName {
    /// Validates `name` and wraps it.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when the name is empty, longer than
    /// [`MAX_NAME_BYTES`] bytes, or contains a control character.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_label(&name, "lock name").map_err(|reason| Error::InvalidName { reason })?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the name and returns the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks the rules shared by lock names and owner labels: 1..=255 bytes, no
/// control characters. Returns a human-readable reason on failure.
pub(crate) fn validate_label(value: &str, what: &str) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes long; the maximum is {MAX_NAME_BYTES}",
            value.len()
        ));
    }
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "{what} contains the control character U+{:04X} at byte {at}",
            u32::from(c)
        ));
    }
    Ok(())
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for LockName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for LockName {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self> {
        Self::new(value)
    }
}

impl TryFrom<String> for LockName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

/// Anything that can name a lock: `&str`, `String`, or an already validated
/// [`LockName`]. Used by [`Locker`](crate::Locker) so callers can pass plain
/// strings and still get [`Error::InvalidName`] before any I/O.
pub trait IntoLockName {
    /// Validates (if needed) and converts.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an invalid name.
    fn into_lock_name(self) -> Result<LockName>;
}

impl IntoLockName for LockName {
    fn into_lock_name(self) -> Result<LockName> {
        Ok(self)
    }
}

impl IntoLockName for &LockName {
    fn into_lock_name(self) -> Result<LockName> {
        Ok(self.clone())
    }
}

impl IntoLockName for &str {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self)
    }
}

impl IntoLockName for String {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self)
    }
}

impl IntoLockName for &String {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostile_but_valid_names() {
        for name in [
            "a",
            "'; DROP TABLE locks; --",
            "../../etc/passwd",
            "/a/b",
            "with space",
            "quote\"s and 'single'",
            "back\\slash",
            "{hash}tag",
            "emoji 🔒",
            &"é".repeat(127),
            &"x".repeat(255),
        ] {
            let parsed = LockName::new(name).expect(name);
            assert_eq!(parsed.as_str(), name);
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for name in ["", "a\0b", "line\nbreak", "tab\t", "del\u{7f}", "c1\u{85}"] {
            assert!(
                matches!(LockName::new(name), Err(Error::InvalidName { .. })),
                "{name:?} should be rejected"
            );
        }
        let long = "x".repeat(256);
        assert!(matches!(
            LockName::new(long),
            Err(Error::InvalidName { .. })
        ));
        // 128 two-byte characters are 256 bytes even though only 128 chars.
        assert!(LockName::new("é".repeat(128)).is_err());
    }

    #[test]
    fn names_are_case_sensitive() {
        assert_ne!(
            LockName::new("Node_B").unwrap(),
            LockName::new("node_b").unwrap()
        );
    }
}
