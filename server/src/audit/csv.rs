//! The log as CSV (RFC 4180), in chain order, a page at a time.

use diesel::prelude::*;

use crate::db::schema::audit_log;
use crate::db::DbConnection;
use crate::error::AppResult;

use super::chain::*;
use super::query::*;

/// The columns of the CSV export.
pub(super) const CSV_HEADER: [&str; 15] = [
    "seq",
    "occurred_at",
    "actor_id",
    "actor_role",
    "actor_sites",
    "action",
    "object_type",
    "object_id",
    "detail",
    "purpose",
    "request_id",
    "client_ip",
    "token_created_by",
    "prev_hash",
    "hash",
];

/// Writes the chained rows passing `filter` as CSV (RFC 4180), in chain
/// order, a page at a time to `sink`; stops when the sink does (the client
/// went away). Returns the rows written. Purposes and details are people's
/// words: formulas in them are neutralised unless `formulas` says not
/// (`sheet`).
pub fn write_csv(
    conn: &mut DbConnection,
    filter: &AuditFilter,
    formulas: crate::sheet::Formulas,
    sink: &mut (dyn FnMut(Vec<u8>) -> bool + Send),
) -> AppResult<u64> {
    use crate::sheet::Chunk;
    let mut out = Chunk::new(formulas);
    out.record(CSV_HEADER)?;
    let mut written = 0u64;
    let mut after = 0i64;
    loop {
        let rows: Vec<AuditRow> = filter
            .apply(audit_log::table.into_boxed())
            .select(AuditRow::as_select())
            .filter(audit_log::seq.gt(after))
            .order(audit_log::seq.asc())
            .limit(PAGE)
            .load(conn)?;
        for row in &rows {
            let seq = row.seq.unwrap_or_default();
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            out.record([
                seq.to_string(),
                row.occurred_at.format(HASHED_TIME).to_string(),
                opt(&row.actor_id),
                opt(&row.actor_role),
                opt(&row.actor_sites),
                row.action.clone(),
                opt(&row.object_type),
                opt(&row.object_id),
                opt(&row.detail),
                opt(&row.purpose),
                opt(&row.request_id),
                opt(&row.client_ip),
                opt(&row.token_created_by),
                opt(&row.prev_hash),
                opt(&row.hash),
            ])?;
            after = seq;
            written += 1;
        }
        let chunk = std::mem::replace(&mut out, Chunk::new(formulas)).bytes()?;
        if (!chunk.is_empty() && !sink(chunk)) || (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(written)
}
