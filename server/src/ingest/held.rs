//! Held forms (#15 item 2): a follow-up that arrives before the form that
//! opens its case is stored (status `pending_case`), decrypted and
//! validated as usual, and held; when the opening form arrives the held
//! forms join the case in the same transaction, or are refused if their
//! sender may not work on it (status `refused`, audited as
//! `access_refused`). Coordinators list refused forms and forms held longer
//! than `pending_case_days`; nothing is dropped. The same list holds ODK
//! forms quarantined for a coordinator (answers their form version refuses,
//! which a phone cannot fix: status `quarantined`, with their problems),
//! which a coordinator dismisses with a reason ([`dismiss`]).

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Prepared, AWAITING_ATTACHMENTS, COMPLETE, DISMISSED, PENDING_CASE, QUARANTINED, REFUSED,
};
use crate::audit::{self, Event, Origin};
use crate::auth::{users, Principal};
use crate::cases::timeline::SubmissionEvent;
use crate::cases::{self, reconcile};
use crate::db::schema::{attachments, submissions};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, FieldError};
use crate::time::now;

/// What a held form will add to its case, read from its form when it was
/// received (the form's rules are not at hand when the case opens).
#[derive(Debug, Serialize, Deserialize)]
pub struct HeldEvent {
    pub programme: String,
    pub event: SubmissionEvent,
}

impl HeldEvent {
    pub fn of(p: &Prepared) -> HeldEvent {
        HeldEvent {
            programme: p.programme.clone(),
            event: p.event.clone(),
        }
    }

    pub fn to_json(&self) -> AppResult<String> {
        serde_json::to_string(self).map_err(|e| AppError::internal(format!("held event: {e}")))
    }
}

/// A held form refused when its case opened: its sender may not work on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub instance_id: String,
    pub case_id: String,
    pub sender: Principal,
}

#[derive(Queryable)]
struct HeldRow {
    instance_id: String,
    form_id: String,
    submitted_by: String,
    payload: String,
    base_case_version: Option<i64>,
    supersedes: Option<String>,
    received_at: NaiveDateTime,
    pending_event: Option<String>,
}

/// The sender of a held form as the access policy sees them now.
fn sender(conn: &mut DbConnection, user_id: &str) -> AppResult<(Principal, bool)> {
    let user = users::get(conn, user_id)?;
    Ok((
        Principal {
            user_id: user.id,
            username: user.username,
            role: user.role,
            site_ids: user.site_ids,
            token_id: String::new(),
            token_created_by: None,
            must_change_password: user.must_change_password,
        },
        user.active,
    ))
}

/// Namespace of the per-case advisory locks below (PostgreSQL's two-key
/// form; the migration lock uses the one-key form).
const HOLD_LOCK_SPACE: i32 = 15_002;

/// Serialises holding a form for `case_id` with opening that case, across
/// servers sharing a PostgreSQL database: without it a form held by one
/// server while another opens the case could miss the join and wait
/// forever. Held until the transaction ends. SQLite has one writer already.
pub fn lock(conn: &mut DbConnection, case_id: &str) -> AppResult<()> {
    if let DbConnection::Pg(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind::<diesel::sql_types::Integer, _>(HOLD_LOCK_SPACE)
            .bind::<diesel::sql_types::Text, _>(case_id)
            .execute(c)?;
    }
    Ok(())
}

/// Joins the forms held for `case_id`, which has just opened, to it (their
/// case, site and number copies set, their events folded in), or refuses
/// those whose sender may not work on it. Call in the transaction that
/// opened the case. Returns the refusals, for the audit rows written last.
pub fn join(conn: &mut DbConnection, case_id: &str) -> AppResult<Vec<Refusal>> {
    lock(conn, case_id)?;
    let rows: Vec<HeldRow> = submissions::table
        .filter(submissions::pending_case_id.eq(case_id))
        .filter(submissions::status.eq(PENDING_CASE))
        .filter(submissions::superseded_by.is_null())
        .order((submissions::received_at, submissions::instance_id))
        .select((
            submissions::instance_id,
            submissions::form_id,
            submissions::submitted_by,
            submissions::payload,
            submissions::base_case_version,
            submissions::supersedes,
            submissions::received_at,
            submissions::pending_event,
        ))
        .load(conn)?;
    let mut refusals = Vec::new();
    for row in rows {
        let case = cases::find(conn, case_id)?
            .ok_or_else(|| AppError::internal("a case just opened is gone"))?;
        let held: HeldEvent = serde_json::from_str(row.pending_event.as_deref().unwrap_or(""))
            .map_err(|e| AppError::internal(format!("held event of {}: {e}", row.instance_id)))?;
        let (who, active) = sender(conn, &row.submitted_by)?;
        if !active || held.programme != case.programme || !cases::may_submit_for(&who, &case) {
            diesel::update(submissions::table.find(&row.instance_id))
                .set(submissions::status.eq(REFUSED))
                .execute(conn)?;
            refusals.push(Refusal {
                instance_id: row.instance_id,
                case_id: case.id.clone(),
                sender: who,
            });
            continue;
        }
        let missing: i64 = attachments::table
            .filter(attachments::instance_id.eq(&row.instance_id))
            .filter(attachments::received_at.is_null())
            .count()
            .get_result(conn)?;
        let status = if missing == 0 {
            COMPLETE
        } else {
            AWAITING_ATTACHMENTS
        };
        diesel::update(submissions::table.find(&row.instance_id))
            .set((
                submissions::case_id.eq(&case.id),
                submissions::site_id.eq(&case.site_id),
                submissions::case_number.eq(&case.number),
                submissions::status.eq(status),
            ))
            .execute(conn)?;
        let seq = cases::touch(conn, &case)?;
        reconcile::submission(
            conn,
            &case.id,
            seq,
            reconcile::Stored {
                instance_id: &row.instance_id,
                event: &held.event,
                by: &who.user_id,
                base_version: row.base_case_version,
                supersedes: row.supersedes.as_deref(),
            },
        )?;
        let data: Map<String, Value> = serde_json::from_str::<Value>(&row.payload)
            .ok()
            .and_then(|v| v.get("data").and_then(Value::as_object).cloned())
            .unwrap_or_default();
        crate::privacy::from_forms::record(
            conn,
            &who,
            &case,
            &row.form_id,
            &data,
            &row.instance_id,
            row.supersedes.as_deref(),
            row.received_at.and_utc(),
        )?;
    }
    Ok(refusals)
}

/// The audit rows of held forms refused when their case opened: each an
/// `access_refused` of its sender, naming the form.
pub fn audit_refusals(
    conn: &mut DbConnection,
    origin: &Origin,
    refusals: &[Refusal],
) -> AppResult<()> {
    for refusal in refusals {
        let detail = format!(
            "held form refused when case {} opened: its sender may not work on that case",
            refusal.case_id
        );
        audit::record(
            conn,
            origin,
            Event::new(Some(&refusal.sender), "access_refused")
                .object("submission", &refusal.instance_id)
                .detail(&detail),
        )?;
    }
    Ok(())
}

/// A held form on the coordinators' list.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HeldForm {
    pub instance_id: String,
    pub form_id: String,
    pub form_version: String,
    /// The case it is about (not seen yet, or the one that refused it).
    pub case_id: String,
    /// That case's number once it opened.
    pub case_number: Option<String>,
    pub submitted_by: String,
    pub username: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub received_at: NaiveDateTime,
    /// `pending_case` (still waiting), `refused`, or `quarantined` (from
    /// ODK Collect, with answers its form version refuses).
    pub status: String,
    /// Whole days since it was received.
    pub days_held: i64,
    /// For a quarantined form: what its form version refuses, by place
    /// (JSON pointers and messages, never an answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<FieldError>>,
}

/// What coordinators of `site_ids` see: forms their sites' workers sent
/// that have waited at least `pending_case_days` for their case, held
/// forms refused, sent by their sites' workers or about their sites' cases,
/// and their sites' workers' quarantined forms (at once).
pub fn list(
    conn: &mut DbConnection,
    site_ids: &[String],
    pending_case_days: i64,
) -> AppResult<Vec<HeldForm>> {
    let senders = users::list(conn, Some(site_ids))?;
    let sender_ids: Vec<&str> = senders.iter().map(|u| u.id.as_str()).collect();
    let now = now();
    let held_since = now - Duration::days(pending_case_days);
    type Row = (
        String,
        String,
        String,
        Option<String>,
        String,
        NaiveDateTime,
        String,
    );
    let select = (
        submissions::instance_id,
        submissions::form_id,
        submissions::form_version,
        submissions::pending_case_id,
        submissions::submitted_by,
        submissions::received_at,
        submissions::status,
    );
    let mut rows: Vec<Row> = submissions::table
        .filter(submissions::status.eq(PENDING_CASE))
        .filter(submissions::received_at.le(held_since))
        .filter(submissions::submitted_by.eq_any(&sender_ids))
        .select(select)
        .load(conn)?;
    // Quarantined forms of the sites' workers, at once: nothing will
    // change them but a coordinator.
    let quarantined: Vec<(Row, Option<String>, String)> = submissions::table
        .filter(submissions::status.eq(QUARANTINED))
        .filter(submissions::submitted_by.eq_any(&sender_ids))
        .select((select, submissions::problems, submissions::payload))
        .load(conn)?;
    let mut problems_of = std::collections::HashMap::new();
    for (mut row, problems, payload) in quarantined {
        let problems: Vec<FieldError> =
            serde_json::from_str(problems.as_deref().unwrap_or("[]"))
                .map_err(|e| AppError::internal(format!("problems of {}: {e}", row.0)))?;
        // The case it names, from its envelope (it joined none).
        row.3 = serde_json::from_str::<Value>(&payload)
            .ok()
            .and_then(|v| v.get("case_id").and_then(Value::as_str).map(str::to_string));
        problems_of.insert(row.0.clone(), problems);
        rows.push(row);
    }
    // Refusals are rare: read them all and keep those of these sites.
    let refused: Vec<Row> = submissions::table
        .filter(submissions::status.eq(REFUSED))
        .select(select)
        .load(conn)?;
    let mut numbers = std::collections::HashMap::new();
    for row in refused {
        let case = match &row.3 {
            Some(id) => cases::find(conn, id)?,
            None => None,
        };
        let of_site = case.as_ref().is_some_and(|c| site_ids.contains(&c.site_id));
        if of_site || sender_ids.contains(&row.4.as_str()) {
            numbers.insert(row.0.clone(), case.and_then(|c| c.number));
            rows.push(row);
        }
    }
    let mut usernames = std::collections::HashMap::new();
    for user in &senders {
        usernames.insert(user.id.clone(), user.username.clone());
    }
    let mut listed = Vec::with_capacity(rows.len());
    for (instance_id, form_id, form_version, case_id, submitted_by, received_at, status) in rows {
        let username = match usernames.get(&submitted_by) {
            Some(name) => name.clone(),
            None => users::get(conn, &submitted_by)?.username,
        };
        let problems = problems_of.remove(&instance_id);
        listed.push(HeldForm {
            case_number: numbers.remove(&instance_id).flatten(),
            instance_id,
            form_id,
            form_version,
            case_id: case_id.unwrap_or_default(),
            submitted_by,
            username,
            received_at,
            status,
            days_held: (now - received_at).num_days(),
            problems,
        });
    }
    listed.sort_by(|a, b| (a.received_at, &a.instance_id).cmp(&(b.received_at, &b.instance_id)));
    Ok(listed)
}

/// Dismisses a quarantined form (a coordinator has dealt with it, e.g.
/// the worker sent a corrected one): it leaves the held list, is kept, and
/// a resend of it is still a retry. Only a coordinator of a site of its
/// sender; a form that is not quarantined is 409. The caller audits it,
/// with the reason, in the same transaction.
pub fn dismiss(conn: &mut DbConnection, who: &Principal, instance_id: &str) -> AppResult<()> {
    let found: Option<(String, String)> = submissions::table
        .find(instance_id)
        .select((submissions::status, submissions::submitted_by))
        .first(conn)
        .optional()?;
    const NOT_FOUND: &str = "no such quarantined form";
    let (status, sender) = found.ok_or_else(|| AppError::NotFound(NOT_FOUND.into()))?;
    let sender = users::get(conn, &sender)?;
    if !sender.site_ids.iter().any(|s| who.site_ids.contains(s)) {
        // As if it did not exist (no oracle), audited as a refusal.
        return Err(AppError::Hidden(NOT_FOUND.into()));
    }
    if status == DISMISSED {
        return Err(AppError::Conflict("this form was already dismissed".into()));
    }
    if status != QUARANTINED {
        return Err(AppError::Conflict(
            "only a quarantined form (held for a coordinator) can be dismissed".into(),
        ));
    }
    diesel::update(submissions::table.find(instance_id))
        .set(submissions::status.eq(DISMISSED))
        .execute(conn)?;
    Ok(())
}
