//! Reading the reply of a grant batch: several statements sent as one
//! simple-protocol request (`Dialect::grant_batch`), whose grant rows are
//! the result of one statement among them.

use futures::TryStreamExt as _;
use lockkit_core::{Error, Result};
use sqlx::{AssertSqlSafe, Database, Row as _};

use crate::dialect::Dialect;
use crate::error::classify;

/// Sends `batch` on `conn` and returns the `(fence, count)` rows of the
/// statement at index `rows_of` (0-based).
///
/// # Errors
/// The classified database error; [`Error::Backend`] when the server
/// returned another number of results than `expected` (a statement the
/// batch did not run would otherwise pass unnoticed).
pub(crate) async fn read_grant_rows<D: Dialect>(
    conn: &mut <D::Db as Database>::Connection,
    batch: String,
    expected: usize,
    rows_of: usize,
) -> Result<Vec<(i64, i64)>>
where
    for<'c> &'c mut <D::Db as Database>::Connection: sqlx::Executor<'c, Database = D::Db>,
    for<'r> i64: sqlx::Decode<'r, D::Db> + sqlx::Type<D::Db>,
    usize: sqlx::ColumnIndex<<D::Db as Database>::Row>,
{
    let mut stream = sqlx::raw_sql(AssertSqlSafe(batch)).fetch_many(conn);
    let (mut results, mut rows) = (0, Vec::new());
    while let Some(item) = stream
        .try_next()
        .await
        .map_err(|e| classify::<D>(e, "acquiring a lock"))?
    {
        match item {
            sqlx::Either::Left(_) => results += 1,
            sqlx::Either::Right(row) if results == rows_of => {
                let read = |e| classify::<D>(e, "reading a grant");
                rows.push((
                    row.try_get::<i64, _>(0).map_err(read)?,
                    row.try_get::<i64, _>(1).map_err(read)?,
                ));
            }
            sqlx::Either::Right(_) => {}
        }
    }
    if results != expected {
        return Err(Error::backend(
            D::KIND,
            format!("the grant batch returned {results} results instead of {expected}"),
            None,
        ));
    }
    Ok(rows)
}
