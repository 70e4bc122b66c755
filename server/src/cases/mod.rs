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
    sync::record_change(conn, ChangeKind::Case, id, case.assigned_to.as_deref())?;
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
    sync::record_change(
        conn,
        ChangeKind::Case,
        &case.id,
        case.assigned_to.as_deref(),
    )?;
    Ok(case.version + 1)
}
