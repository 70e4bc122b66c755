//! Break-glass: a coordinator reads a case of a site they do not coordinate
//! (a child who turns up elsewhere, an on-call night), for a written reason
//! and a limited time. The grant reads only; it never lets anyone submit,
//! assign or approve. Grants are kept for good, and both the grant and every
//! read under it are audited.

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub reason: String,
    /// Shorter than the server's limit if the caller knows they need less.
    pub minutes: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
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
    let case = find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    policy::break_glass(who, case.scope())?;
    let reason = request.reason.trim();
    if reason.chars().count() < MIN_REASON {
        return Err(AppError::invalid_field(
            "/reason",
            format!("state why you must read this case (at least {MIN_REASON} characters)"),
        ));
    }
    let minutes = request.minutes.unwrap_or(max_minutes);
    if !(1..=max_minutes).contains(&minutes) {
        return Err(AppError::invalid_field(
            "/minutes",
            format!("must be from 1 to {max_minutes}"),
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let granted_at = now.naive_utc();
    let expires_at = granted_at + Duration::minutes(minutes);
    diesel::insert_into(break_glass_grants::table)
        .values(NewGrant {
            id: &id,
            case_id: &case.id,
            user_id: &who.user_id,
            reason,
            granted_at,
            expires_at,
        })
        .execute(conn)?;
    // Loud on purpose: operators watching the logs see it at once.
    tracing::warn!(
        case = case.number.as_deref().unwrap_or(&case.id),
        user_id = %who.user_id,
        minutes,
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
pub fn list(conn: &mut DbConnection, who: &Principal, now: DateTime<Utc>) -> AppResult<Vec<Grant>> {
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
        ))
        .into_boxed();
    if let Some(sites) = sites {
        query = query.filter(
            cases::site_id
                .eq_any(sites)
                .or(break_glass_grants::user_id.eq(who.user_id.clone())),
        );
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
    );
    let rows: Vec<Row> = query
        .order(break_glass_grants::granted_at.desc())
        .limit(500)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(id, case_id, case_number, user_id, username, reason, granted_at, expires_at)| Grant {
                id,
                case_id,
                case_number,
                user_id,
                username,
                reason,
                granted_at: granted_at.and_utc(),
                expires_at: expires_at.and_utc(),
                active: expires_at.and_utc() > now,
            },
        )
        .collect())
}
