//! Cases: for now what ingest needs — a case per admission, its site, who is
//! assigned and its version. The case-timeline issue adds children, numbers,
//! the event fold and deadlines on top. Owns the `cases` table.

use diesel::prelude::*;
use serde::Serialize;

use crate::auth::{now, Principal, Role};
use crate::db::schema::cases;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::sync::{self, ChangeKind};

pub const OPEN: &str = "open";
pub const CLOSED: &str = "closed";

#[derive(Debug, Clone, PartialEq, Serialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = cases)]
pub struct Case {
    pub id: String,
    pub programme: String,
    pub site_id: String,
    pub assigned_to: Option<String>,
    pub state: String,
    pub version: i64,
    pub opened_by_instance: String,
    pub created_at: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
}

pub fn find(conn: &mut DbConnection, id: &str) -> AppResult<Option<Case>> {
    Ok(cases::table
        .find(id)
        .select(Case::as_select())
        .first(conn)
        .optional()?)
}

/// Whether `who` may submit forms for `case`: the assigned field worker, or
/// a coordinator of the case's site.
pub fn may_submit_for(who: &Principal, case: &Case) -> bool {
    match who.role {
        Role::FieldWorker => case.assigned_to.as_deref() == Some(who.user_id.as_str()),
        Role::Coordinator => who.is_at_site(&case.site_id),
        _ => false,
    }
}

/// Opens a case at `site_id`; a field worker who opens it is assigned to it.
pub fn open(
    conn: &mut DbConnection,
    id: &str,
    programme: &str,
    site_id: &str,
    by: &Principal,
    instance_id: &str,
) -> AppResult<Case> {
    let t = now();
    let case = Case {
        id: id.to_string(),
        programme: programme.to_string(),
        site_id: site_id.to_string(),
        assigned_to: (by.role == Role::FieldWorker).then(|| by.user_id.clone()),
        state: OPEN.into(),
        version: 1,
        opened_by_instance: instance_id.to_string(),
        created_at: t,
        updated_at: t,
    };
    diesel::insert_into(cases::table)
        .values(&case)
        .execute(conn)
        .map_err(|e| match AppError::from(e) {
            AppError::Conflict(_) => {
                AppError::invalid_field("/case_id", "a case with this id already exists")
            }
            other => other,
        })?;
    notify_phone(conn, &case)?;
    Ok(case)
}

/// Bumps the case's version after a change; phones learn of it by sync.
pub fn touch(conn: &mut DbConnection, case: &Case) -> AppResult<i64> {
    diesel::update(cases::table.find(&case.id))
        .set((
            cases::version.eq(cases::version + 1),
            cases::updated_at.eq(now()),
        ))
        .execute(conn)?;
    notify_phone(conn, case)?;
    Ok(case.version + 1)
}

/// Tells the assigned worker's phone (only theirs) that the case changed.
fn notify_phone(conn: &mut DbConnection, case: &Case) -> AppResult<()> {
    if let Some(user) = case.assigned_to.as_deref() {
        sync::record_change(conn, ChangeKind::Case, &case.id, Some(user))?;
    }
    Ok(())
}

/// Gives the case to `to` (or to nobody). Call inside a write transaction:
/// both the phone that had the case (to drop it) and the one that gets it
/// hear of the change on their next sync.
pub fn assign(conn: &mut DbConnection, case: &Case, to: Option<&str>) -> AppResult<Case> {
    diesel::update(cases::table.find(&case.id))
        .set((
            cases::assigned_to.eq(to),
            cases::version.eq(cases::version + 1),
            cases::updated_at.eq(now()),
        ))
        .execute(conn)?;
    if let Some(previous) = case.assigned_to.as_deref().filter(|p| Some(*p) != to) {
        sync::record_change(conn, ChangeKind::Case, &case.id, Some(previous))?;
    }
    if let Some(to) = to {
        sync::record_change(conn, ChangeKind::Case, &case.id, Some(to))?;
    }
    find(conn, &case.id)?.ok_or_else(|| AppError::NotFound("the case is gone".into()))
}

/// What a phone keeps of a case: enough to find the child's file again,
/// no personal data. The case-timeline issue fills number and deadlines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhoneCase {
    pub id: String,
    pub number: Option<String>,
    pub programme: String,
    pub site_id: String,
    pub state: String,
    pub version: i64,
    pub next_deadlines: Vec<serde_json::Value>,
}

impl From<Case> for PhoneCase {
    fn from(c: Case) -> Self {
        PhoneCase {
            id: c.id,
            number: None,
            programme: c.programme,
            site_id: c.site_id,
            state: c.state,
            version: c.version,
            next_deadlines: Vec::new(),
        }
    }
}

/// Whether a phone of `user_id` should hold this case.
pub fn belongs_on_phone_of(case: &Case, user_id: &str) -> bool {
    case.state != CLOSED && case.assigned_to.as_deref() == Some(user_id)
}

/// The cases assigned to `user_id` that are not closed.
pub fn assigned_open(conn: &mut DbConnection, user_id: &str) -> AppResult<Vec<Case>> {
    Ok(cases::table
        .filter(cases::assigned_to.eq(user_id))
        .filter(cases::state.ne(CLOSED))
        .order(cases::created_at)
        .select(Case::as_select())
        .load(conn)?)
}
