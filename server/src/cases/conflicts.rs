//! Conflicts: a submission made on an older version of the case (the phone
//! was offline) that changes a fact someone changed since. Both are kept,
//! the programme's rule applies (latest `occurred_at` wins, by the fold),
//! and a coordinator sees both values until one is chosen. Never a silent
//! overwrite. Owns `conflicts`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use super::fold::Folded;
use super::timeline::EventRow;
use super::Case;
use crate::db::schema::{case_events, conflicts};
use crate::db::DbConnection;
use crate::error::AppResult;
use crate::time::now;

crate::ids::string_id! {
    /// A conflict between a submission and a fact changed since its base.
    ConflictId
}

pub const OPEN: &str = "open";
pub const RESOLVED: &str = "resolved";

#[derive(Debug, Clone, PartialEq, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = conflicts)]
pub struct ConflictRow {
    pub id: String,
    pub case_id: String,
    pub site_id: String,
    pub fact: String,
    pub event_id: String,
    pub event_value: String,
    pub other_event_id: String,
    pub other_value: String,
    pub applied_value: String,
    pub status: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub created_at: NaiveDateTime,
    pub resolved_by: Option<String>,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub resolved_at: Option<NaiveDateTime>,
    pub resolution_event_id: Option<String>,
}

/// A case's conflicts, open ones first, each group oldest first. The
/// caller has checked the reader may read the case.
pub fn of_case(conn: &mut DbConnection, case_id: &str) -> AppResult<Vec<ConflictRow>> {
    let mut rows: Vec<ConflictRow> = conflicts::table
        .filter(conflicts::case_id.eq(case_id))
        .select(ConflictRow::as_select())
        .order((conflicts::created_at, conflicts::id))
        .limit(500)
        .load(conn)?;
    rows.sort_by_key(|c| c.status != OPEN);
    Ok(rows)
}

/// Raises a conflict for each fact that event `event_id` (made on case
/// version `base`) sets to a value other than the one a later-recorded
/// event set it to. Returns how many were raised.
pub fn detect(
    conn: &mut DbConnection,
    case: &Case,
    event_id: &str,
    base: Option<i64>,
    facts: &Map<String, Value>,
    folded: &Folded,
) -> AppResult<usize> {
    let Some(base) = base else { return Ok(0) };
    if facts.is_empty() {
        return Ok(0);
    }
    let since: Vec<EventRow> = case_events::table
        .filter(case_events::case_id.eq(&case.id))
        .filter(case_events::seq.gt(base))
        .filter(case_events::id.ne(event_id))
        .filter(case_events::superseded.eq(false))
        .order(case_events::seq.desc())
        .select(EventRow::as_select())
        .load(conn)?;
    let mut raised = 0;
    for (fact, value) in facts {
        // The latest change to this fact the phone could not have seen.
        let other = since
            .iter()
            .find_map(|row| row.facts().get(fact).cloned().map(|v| (row, v)));
        let Some((other, other_value)) = other else {
            continue;
        };
        if &other_value == value {
            continue;
        }
        let applied = folded.facts.get(fact).cloned().unwrap_or(Value::Null);
        diesel::insert_into(conflicts::table)
            .values((
                conflicts::id.eq(crate::ids::new_row_id()),
                conflicts::case_id.eq(&case.id),
                conflicts::site_id.eq(&case.site_id),
                conflicts::fact.eq(fact),
                conflicts::event_id.eq(event_id),
                conflicts::event_value.eq(value.to_string()),
                conflicts::other_event_id.eq(&other.id),
                conflicts::other_value.eq(other_value.to_string()),
                conflicts::applied_value.eq(applied.to_string()),
                conflicts::status.eq(OPEN),
                conflicts::created_at.eq(now()),
            ))
            .execute(conn)?;
        raised += 1;
    }
    Ok(raised)
}
