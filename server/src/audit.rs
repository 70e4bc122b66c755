//! The audit log: who did what to which object, when, from where. Rows are
//! only ever inserted. Written in the same transaction as the change they
//! describe, so a change without its audit row cannot exist.

use diesel::prelude::*;
use serde::Serialize;

use crate::auth::Principal;
use crate::db::schema::audit_log;
use crate::db::DbConnection;
use crate::error::AppResult;

/// Where a request came from; attached to every audit row it causes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
struct NewRow<'a> {
    occurred_at: chrono::NaiveDateTime,
    actor_id: Option<&'a str>,
    actor_role: Option<&'a str>,
    action: &'a str,
    object_type: Option<&'a str>,
    object_id: Option<&'a str>,
    detail: Option<&'a str>,
    request_id: Option<&'a str>,
    client_ip: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub id: i64,
    pub occurred_at: chrono::NaiveDateTime,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

/// One thing that happened. `detail` must never hold a password, a token or
/// a child's name.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub actor: Option<&'a Principal>,
    pub action: &'a str,
    pub object_type: Option<&'a str>,
    pub object_id: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl<'a> Event<'a> {
    pub fn new(actor: Option<&'a Principal>, action: &'a str) -> Self {
        Event {
            actor,
            action,
            ..Event::default()
        }
    }

    pub fn object(mut self, kind: &'a str, id: &'a str) -> Self {
        self.object_type = Some(kind);
        self.object_id = Some(id);
        self
    }

    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }
}

pub fn record(conn: &mut DbConnection, origin: &Origin, event: Event<'_>) -> AppResult<()> {
    diesel::insert_into(audit_log::table)
        .values(NewRow {
            occurred_at: crate::auth::now(),
            actor_id: event.actor.map(|p| p.user_id.as_str()),
            actor_role: event.actor.map(|p| p.role.as_str()),
            action: event.action,
            object_type: event.object_type,
            object_id: event.object_id,
            detail: event.detail,
            request_id: origin.request_id.as_deref(),
            client_ip: origin.client_ip.as_deref(),
        })
        .execute(conn)?;
    Ok(())
}

/// The most recent rows first, at most `limit`.
pub fn recent(conn: &mut DbConnection, limit: i64) -> AppResult<Vec<AuditRow>> {
    Ok(audit_log::table
        .select(AuditRow::as_select())
        .order(audit_log::id.desc())
        .limit(limit)
        .load(conn)?)
}
