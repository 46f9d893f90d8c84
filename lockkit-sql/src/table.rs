//! Table names: validated identifiers, never user data spliced into SQL.

use std::fmt;

use lockkit_core::{Error, Result};

/// The longest table name accepted. Derived names (`<table>_fence`,
/// `<table>_keep_fence`, `<table>_expires_at`) must fit the 63-byte
/// identifier limit of Postgres.
pub const MAX_TABLE_NAME: usize = 48;

/// A validated table name, optionally qualified by a schema
/// (`schema.table`, for Postgres and MySQL databases).
///
/// Each part must match `[A-Za-z_][A-Za-z0-9_]*`, the table part at most
/// [`MAX_TABLE_NAME`] bytes. Names are quoted in every statement anyway, so
/// reserved words such as `lock` work.
///
/// ```
/// use lockkit_sql::TableName;
///
/// assert!(TableName::new("locks").is_ok());
/// assert!(TableName::new("ops.pipeline_locks").is_ok());
/// assert!(TableName::new("locks; DROP TABLE x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    schema: Option<String>,
    table: String,
}

impl TableName {
    /// Validates `name` (`table` or `schema.table`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] saying what is wrong.
    pub fn new(name: &str) -> Result<Self> {
        let (schema, table) = match name.split_once('.') {
            Some((schema, table)) => (Some(schema), table),
            None => (None, name),
        };
        if let Some(schema) = schema {
            check_identifier(schema, "schema name", 63)?;
        }
        check_identifier(table, "table name", MAX_TABLE_NAME)?;
        Ok(Self {
            schema: schema.map(str::to_owned),
            table: table.to_owned(),
        })
    }

    /// The schema part, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table part.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The quoted, qualified name of the table itself, or of a companion
    /// object named `<table><suffix>`, with `quote` as the quote character
    /// (`"` for SQLite and Postgres, `` ` `` for MySQL).
    pub(crate) fn quoted(&self, suffix: &str, quote: char) -> String {
        let object = format!("{quote}{}{suffix}{quote}", self.table);
        match &self.schema {
            Some(schema) => format!("{quote}{schema}{quote}.{object}"),
            None => object,
        }
    }

    /// The quoted, unqualified name `<table><suffix>` (index and trigger
    /// names, which some dialects do not qualify).
    pub(crate) fn quoted_bare(&self, suffix: &str, quote: char) -> String {
        format!("{quote}{}{suffix}{quote}", self.table)
    }
}

impl Default for TableName {
    fn default() -> Self {
        Self {
            schema: None,
            table: "locks".to_owned(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

fn check_identifier(value: &str, what: &str, max: usize) -> Result<()> {
    let mut chars = value.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !rest_ok {
        return Err(Error::invalid_input(format!(
            "{what} {value:?} must start with a letter or '_' and contain only ASCII letters, digits and '_'"
        )));
    }
    if value.len() > max {
        return Err(Error::invalid_input(format!(
            "{what} {value:?} is longer than {max} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_quotes() {
        let t = TableName::new("ops.my_locks").unwrap();
        assert_eq!(t.quoted("", '"'), "\"ops\".\"my_locks\"");
        assert_eq!(t.quoted("_fence", '`'), "`ops`.`my_locks_fence`");
        assert_eq!(t.quoted_bare("_keep_fence", '"'), "\"my_locks_keep_fence\"");
        for bad in [
            "",
            "1locks",
            "lo-cks",
            "a.b.c",
            "locks\"",
            "x".repeat(49).as_str(),
            "é",
        ] {
            assert!(TableName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(TableName::default().to_string(), "locks");
    }
}
