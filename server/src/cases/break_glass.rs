//! Break-glass: a coordinator reads a case of a site they do not coordinate
//! (a child who turns up elsewhere, an on-call night), for a written reason
//! and a limited time. The grant reads only; it never lets anyone submit,
//! assign or approve. Grants are kept for good, and both the grant and every
//! read under it are audited.
//!
//! It stays exceptional (#14): the reason must be words a reviewer can
//! judge; a coordinator holds at most one active grant per case; and a
//! grant within a day of an earlier one for the same case (a renewal) needs
//! a new reason and is flagged on the reviewers' list.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::find;
use crate::auth::{policy, Principal};
use crate::db::schema::{break_glass_grants, cases, users};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};

/// The shortest reason accepted: a reviewer must be able to tell why.
const MIN_REASON: usize = 20;

/// Distinct words a reason needs ("aaaa…" or "urgent urgent" are none).
const MIN_REASON_WORDS: usize = 4;

/// A grant this soon after an earlier one, same coordinator and case, is a
/// renewal.
const RENEWAL_WINDOW_HOURS: i64 = 24;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub reason: String,
    /// Shorter than the server's limit if the caller knows they need less.
    pub minutes: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Grant {
    pub id: String,
    pub case_id: String,
    pub case_number: Option<String>,
    pub user_id: String,
    pub username: Option<String>,
    pub reason: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub active: bool,
    /// Made within 24 hours of an earlier grant of the same coordinator
    /// for the same case: for the reviewers to look at twice.
    pub renewal: bool,
}

#[derive(Insertable)]
#[diesel(table_name = break_glass_grants)]
struct NewGrant<'a> {
    id: &'a str,
    case_id: &'a str,
    user_id: &'a str,
    reason: &'a str,
    granted_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    renewal: bool,
}

/// The words of a reason that count: at least two letters, not one letter
/// repeated; lower-cased, so "Urgent URGENT" is one word.
fn words(reason: &str) -> Vec<String> {
    reason
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| {
            let mut letters = w.chars();
            let first = letters.next();
            w.chars().count() >= 2 && letters.any(|c| Some(c) != first)
        })
        .map(str::to_lowercase)
        .collect()
}

/// Why `reason` is not one a reviewer could judge, if it is not.
fn reason_problem(reason: &str) -> Option<String> {
    let mut distinct = words(reason);
    distinct.sort();
    distinct.dedup();
    if reason.chars().count() < MIN_REASON || distinct.len() < MIN_REASON_WORDS {
        return Some(format!(
            "state in words why you must read this case: at least {MIN_REASON} characters and \
             {MIN_REASON_WORDS} different words (who asked, what happened)"
        ));
    }
    None
}

/// Two reasons are the same if they have the same words in the same order,
/// whatever the case and punctuation.
fn same_reason(a: &str, b: &str) -> bool {
    words(a) == words(b)
}

/// Serialises grants for one case across servers: on PostgreSQL the case's
/// row is locked until the transaction ends; SQLite's write transaction is
/// exclusive already.
fn lock_case(conn: &mut DbConnection, case_id: &str) -> AppResult<()> {
    if let DbConnection::Pg(pg) = conn {
        cases::table
            .find(case_id)
            .select(cases::id)
            .for_update()
            .first::<String>(pg)?;
    }
    Ok(())
}

/// Opens case `case_id` to coordinator `who` for `request.minutes` (at most
/// `max_minutes`).
pub fn open(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    request: &Request,
    max_minutes: i64,
    now: DateTime<Utc>,
) -> AppResult<Grant> {
    policy::may_break_glass(who)?;
    let case = find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    policy::break_glass(who, case.scope())?;
    let reason = request.reason.trim();
    if let Some(problem) = reason_problem(reason) {
        return Err(AppError::invalid_field("/reason", problem));
    }
    let minutes = request.minutes.unwrap_or(max_minutes);
    if !(1..=max_minutes).contains(&minutes) {
        return Err(AppError::invalid_field(
            "/minutes",
            format!("must be from 1 to {max_minutes}"),
        ));
    }
    let granted_at = now.naive_utc();
    lock_case(conn, &case.id)?;
    let earlier: Vec<(String, NaiveDateTime)> = break_glass_grants::table
        .filter(break_glass_grants::user_id.eq(&who.user_id))
        .filter(break_glass_grants::case_id.eq(&case.id))
        .filter(
            break_glass_grants::granted_at
                .gt(granted_at - Duration::hours(RENEWAL_WINDOW_HOURS))
                .or(break_glass_grants::expires_at.gt(granted_at)),
        )
        .select((break_glass_grants::reason, break_glass_grants::expires_at))
        .order(break_glass_grants::expires_at.desc())
        .load(conn)?;
    if let Some((_, until)) = earlier.iter().find(|(_, until)| *until > granted_at) {
        return Err(AppError::Conflict(format!(
            "you already hold a grant for this case until {}; it cannot be renewed before it expires",
            until
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    if earlier.iter().any(|(said, _)| same_reason(said, reason)) {
        return Err(AppError::invalid_field(
            "/reason",
            format!(
                "you opened this case within the last {RENEWAL_WINDOW_HOURS} hours for the same \
                 reason: say what has changed that makes you need it again"
            ),
        ));
    }
    let renewal = !earlier.is_empty();
    let id = crate::ids::new_row_id();
    let expires_at = granted_at + Duration::minutes(minutes);
    diesel::insert_into(break_glass_grants::table)
        .values(NewGrant {
            id: &id,
            case_id: &case.id,
            user_id: &who.user_id,
            reason,
            granted_at,
            expires_at,
            renewal,
        })
        .execute(conn)?;
    // Loud on purpose: operators watching the logs see it at once.
    tracing::warn!(
        case = case.number.as_deref().unwrap_or(&case.id),
        user_id = %who.user_id,
        minutes,
        renewal,
        "break-glass access granted"
    );
    Ok(Grant {
        id,
        case_id: case.id,
        case_number: case.number,
        user_id: who.user_id.clone(),
        username: Some(who.username.clone()),
        reason: reason.to_string(),
        granted_at: granted_at.and_utc(),
        expires_at: expires_at.and_utc(),
        active: true,
        renewal,
    })
}

/// Whether `user_id` holds an unexpired grant for `case_id`.
pub fn active(
    conn: &mut DbConnection,
    user_id: &str,
    case_id: &str,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        break_glass_grants::table
            .filter(break_glass_grants::user_id.eq(user_id))
            .filter(break_glass_grants::case_id.eq(case_id))
            .filter(break_glass_grants::expires_at.gt(now.naive_utc())),
    ))
    .get_result(conn)?)
}

/// Grants for review, newest first: admins see all; a coordinator sees
/// those on their sites' cases (someone looked at their cases) and their
/// own.
/// `case_id` narrows them to one case.
pub fn list(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: Option<&str>,
    now: DateTime<Utc>,
) -> AppResult<Vec<Grant>> {
    let sites = policy::review_break_glass(who)?;
    let mut query = break_glass_grants::table
        .inner_join(cases::table)
        .left_join(users::table.on(users::id.eq(break_glass_grants::user_id)))
        .select((
            break_glass_grants::id,
            break_glass_grants::case_id,
            cases::number,
            break_glass_grants::user_id,
            users::username.nullable(),
            break_glass_grants::reason,
            break_glass_grants::granted_at,
            break_glass_grants::expires_at,
            break_glass_grants::renewal,
        ))
        .into_boxed();
    if let Some(sites) = sites {
        query = query.filter(
            cases::site_id
                .eq_any(sites)
                .or(break_glass_grants::user_id.eq(who.user_id.clone())),
        );
    }
    if let Some(case_id) = case_id {
        query = query.filter(break_glass_grants::case_id.eq(case_id.to_string()));
    }
    type Row = (
        String,
        String,
        Option<String>,
        String,
        Option<String>,
        String,
        NaiveDateTime,
        NaiveDateTime,
        bool,
    );
    let rows: Vec<Row> = query
        .order(break_glass_grants::granted_at.desc())
        .limit(500)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                case_id,
                case_number,
                user_id,
                username,
                reason,
                granted_at,
                expires_at,
                renewal,
            )| Grant {
                id,
                case_id,
                case_number,
                user_id,
                username,
                reason,
                granted_at: granted_at.and_utc(),
                expires_at: expires_at.and_utc(),
                active: expires_at.and_utc() > now,
                renewal,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_words_a_reviewer_can_judge() {
        for bad in [
            "aaaaaaaaaaaaaaaaaaaa",
            "a a a a a a a a a a a a",
            "urgent urgent urgent urgent urgent",
            "aaaa bbbb cccc dddd eeee",
            "x1 y2 z3 w4 v5 u6 t7 s8",
            "need to see",
        ] {
            assert!(reason_problem(bad).is_some(), "{bad:?}");
        }
        for good in [
            "child presented at Shymkent police station at night",
            "ребёнок доставлен в полицию Шымкента ночью",
        ] {
            assert!(reason_problem(good).is_none(), "{good:?}");
        }
        assert!(same_reason(
            "Police called, at night.",
            "police called at NIGHT"
        ));
        assert!(!same_reason(
            "police called at night",
            "police called again this morning"
        ));
    }
}
