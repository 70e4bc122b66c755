//! The change log phones sync from. Every change a phone must learn about
//! (a form version, a programme key, a case) is one row with a sequence
//! number allocated inside the writing transaction. A leaf under the
//! domain: forms, crypto and cases record here; `sync::feed` reads it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;

use crate::db::schema::{counters, sync_changes};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::time::now;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Form,
    Key,
    Case,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Form => "form",
            ChangeKind::Key => "key",
            ChangeKind::Case => "case",
        }
    }
}

/// Takes the next value of a named counter. Call inside a write
/// transaction: the updated row stays locked until commit, so numbers are
/// unique across servers and commit in order.
pub fn next_counter(conn: &mut DbConnection, name: &str) -> AppResult<i64> {
    diesel::update(counters::table.find(name))
        .set(counters::value.eq(counters::value + 1))
        .execute(conn)?;
    Ok(counters::table
        .find(name)
        .select(counters::value)
        .first(conn)?)
}

/// Adds one to a named counter, making it (at 1) if it is not there yet.
/// Call inside a write transaction: the row stays locked until commit.
pub fn bump_counter(conn: &mut DbConnection, name: &str) -> AppResult<()> {
    let first = (counters::name.eq(name), counters::value.eq(1));
    let next = counters::value.eq(counters::value + 1);
    match conn {
        DbConnection::Sqlite(c) => diesel::insert_into(counters::table)
            .values(first)
            .on_conflict(counters::name)
            .do_update()
            .set(next)
            .execute(c)?,
        DbConnection::Pg(c) => diesel::insert_into(counters::table)
            .values(first)
            .on_conflict(counters::name)
            .do_update()
            .set(next)
            .execute(c)?,
    };
    Ok(())
}

/// A named counter's value (0 when it was never bumped).
pub fn counter(conn: &mut DbConnection, name: &str) -> AppResult<i64> {
    Ok(counters::table
        .find(name)
        .select(counters::value)
        .first(conn)
        .optional()?
        .unwrap_or(0))
}

/// Records that `object_id` changed; `user_id` names the one user it
/// concerns, or `None` for everyone. Returns the change's sequence number.
pub fn record_change(
    conn: &mut DbConnection,
    kind: ChangeKind,
    object_id: &str,
    user_id: Option<&str>,
) -> AppResult<i64> {
    let seq = next_counter(conn, "sync")?;
    diesel::insert_into(sync_changes::table)
        .values((
            sync_changes::seq.eq(seq),
            sync_changes::kind.eq(kind.as_str()),
            sync_changes::object_id.eq(object_id),
            sync_changes::user_id.eq(user_id),
            sync_changes::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(seq)
}

/// The newest sequence number (0 when nothing changed yet).
pub fn latest(conn: &mut DbConnection) -> AppResult<i64> {
    Ok(counters::table
        .find("sync")
        .select(counters::value)
        .first(conn)?)
}

/// One page of the changes `user_id` must hear of, after `after` and up to
/// `upto`: those for everyone and those for this user, oldest first.
///
/// Two reads by the index on (user_id, seq), merged: one read with `OR`
/// walked the sequence and skipped every other user's changes, which
/// grow with the rate of ingest times the time since the cursor (#19
/// item 7: a phone pulling every 30 s at 700 submissions/s).
pub fn changes_for(
    conn: &mut DbConnection,
    user_id: &str,
    after: i64,
    upto: i64,
    limit: i64,
) -> AppResult<Vec<(i64, String, String)>> {
    let page = |conn: &mut DbConnection, mine: bool| -> AppResult<Vec<(i64, String, String)>> {
        let mut query = sync_changes::table
            .filter(sync_changes::seq.gt(after))
            .filter(sync_changes::seq.le(upto))
            .order(sync_changes::seq)
            .limit(limit)
            .select((
                sync_changes::seq,
                sync_changes::kind,
                sync_changes::object_id,
            ))
            .into_boxed();
        query = match mine {
            true => query.filter(sync_changes::user_id.eq(user_id)),
            false => query.filter(sync_changes::user_id.is_null()),
        };
        Ok(query.load(conn)?)
    };
    let mut changes = page(conn, false)?;
    changes.extend(page(conn, true)?);
    changes.sort_by_key(|c| c.0);
    changes.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(changes)
}

/// An opaque cursor for a position in a sequence (the change log's, the
/// audit log's): clients pass it back, never read it.
pub fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{seq}"))
}

pub fn decode_cursor(cursor: &str) -> AppResult<i64> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("v1:")?.parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .ok_or_else(|| {
            AppError::bad_request("cursor: not a cursor this server gave; sync again without one")
        })
}
