//! Cases: one admission of one child, with its number, the worker assigned,
//! and what the fold of its timeline says (state, facts, deadlines). Owns
//! the `cases` table; `timeline` owns events and deadlines, `children` the
//! children and their possible duplicates.

pub mod actions;
pub mod break_glass;
pub mod check;
pub mod children;
pub mod conflicts;
pub mod fold;
pub mod numbers;
pub mod partial;
pub mod projection;
pub mod reconcile;
pub mod timeline;
pub mod views;

use diesel::prelude::*;
use serde::Serialize;

use crate::auth::{sites::Site, users, Principal, Role};
use crate::changes::{self, ChangeKind};
use crate::db::schema::{case_deadlines, cases};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::{NumberScheme, Programme};
use crate::time::now;

crate::ids::string_id! {
    /// A case: one admission of one child (a UUID made on the phone).
    CaseId
}

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
    #[serde(serialize_with = "crate::json::utc")]
    pub created_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc")]
    pub updated_at: chrono::NaiveDateTime,
    pub child_id: Option<String>,
    pub number: Option<String>,
    pub admission: i32,
    pub facts: String,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub opened_at: Option<chrono::NaiveDateTime>,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub closed_at: Option<chrono::NaiveDateTime>,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub next_due_at: Option<chrono::NaiveDateTime>,
    pub merged_into: Option<String>,
}

impl Case {
    /// What the access policy looks at.
    pub fn scope(&self) -> crate::auth::policy::CaseRef<'_> {
        crate::auth::policy::CaseRef {
            site_id: &self.site_id,
            assigned_to: self.assigned_to.as_deref(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.closed_at.is_none() && self.merged_into.is_none()
    }
}

pub fn find(conn: &mut DbConnection, id: &str) -> AppResult<Option<Case>> {
    Ok(cases::table
        .find(id)
        .select(Case::as_select())
        .first(conn)
        .optional()?)
}

/// The case of `site_id` numbered `number` (as its programme writes it).
pub fn numbered(conn: &mut DbConnection, site_id: &str, number: &str) -> AppResult<Option<Case>> {
    Ok(cases::table
        .filter(cases::site_id.eq(site_id))
        .filter(cases::number.eq(number.trim()))
        .select(Case::as_select())
        .first(conn)
        .optional()?)
}

/// Whether a case of `programme` at any site has `number` (BT codes are
/// unique in the programme).
fn number_taken(conn: &mut DbConnection, programme: &str, number: &str) -> AppResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        cases::table
            .filter(cases::programme.eq(programme))
            .filter(cases::number.eq(number)),
    ))
    .get_result(conn)?)
}

/// Whether `who` may submit forms for `case` (the access policy decides).
pub fn may_submit_for(who: &Principal, case: &Case) -> bool {
    crate::auth::policy::work_on_case(who, case.scope()).is_ok()
}

/// What opening a case needs to know.
pub struct Opening<'a> {
    pub id: &'a str,
    pub programme: &'a Programme,
    pub site: &'a Site,
    pub by: &'a Principal,
    pub by_display_name: &'a str,
    /// The initials an admin set for the opener (BT codes), if any.
    pub by_initials: Option<&'a str>,
    pub instance_id: &'a str,
    /// When the opening event happened (for BT, the registration date).
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub identity: children::Identity,
}

/// Opens a case for a new child at the opener's site, numbered as the
/// programme says; a field worker who opens it is assigned to it.
pub fn open(conn: &mut DbConnection, o: Opening) -> AppResult<Case> {
    if find(conn, o.id)?.is_some() {
        return Err(AppError::invalid_field(
            "/case_id",
            "a case with this id already exists",
        ));
    }
    let child = children::create(conn, o.programme, &o.site.id, &o.identity)?;
    let number = match o.programme.case_number {
        NumberScheme::KzSiteSequence => {
            let root = numbers::next(conn, &numbers::kz_scope(&o.site.id))?.to_string();
            children::set_root_number(conn, &child, &root)?;
            numbers::kz_number(&root, 0)
        }
        NumberScheme::BtCaseCode => {
            let day = o.programme.calendar.local_date(o.occurred_at);
            let org = numbers::org_code(o.site.org_code.as_deref().unwrap_or(&o.site.code));
            let initials = numbers::initials(o.by_display_name, o.by_initials);
            // Codes issued before the count was per organisation (per site)
            // may already hold the next value: skip those.
            loop {
                let count = numbers::next(conn, &numbers::bt_scope(&org, day))?;
                let code = numbers::bt_code(count, day, &org, &initials);
                if !number_taken(conn, &o.programme.id, &code)? {
                    break code;
                }
            }
        }
    };
    let t = now();
    let case = Case {
        id: o.id.to_string(),
        programme: o.programme.id.clone(),
        site_id: o.site.id.clone(),
        assigned_to: (o.by.role == Role::FieldWorker).then(|| o.by.user_id.clone()),
        state: o.programme.initial_state.clone(),
        version: 1,
        opened_by_instance: o.instance_id.to_string(),
        created_at: t,
        updated_at: t,
        child_id: Some(child.clone()),
        number: Some(number),
        admission: 0,
        facts: "{}".into(),
        opened_at: Some(o.occurred_at.naive_utc()),
        closed_at: None,
        next_due_at: None,
        merged_into: None,
    };
    diesel::insert_into(cases::table)
        .values(&case)
        .execute(conn)?;
    children::propose_duplicates(conn, &child, &o.site.id, &o.identity)?;
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
        changes::record_change(conn, ChangeKind::Case, &case.id, Some(user))?;
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
        changes::record_change(conn, ChangeKind::Case, &case.id, Some(previous))?;
    }
    if let Some(to) = to {
        changes::record_change(conn, ChangeKind::Case, &case.id, Some(to))?;
    }
    find(conn, &case.id)?.ok_or_else(|| AppError::NotFound("the case is gone".into()))
}

/// Applies an admin's changes to a user (`auth::users::update`); when
/// their sites change, their phone hears on its next sync to drop the
/// cases of the sites they left ([`notify_access_lost`]).
pub fn update_user(
    conn: &mut DbConnection,
    id: &str,
    changes: users::UserChanges,
) -> AppResult<users::User> {
    let sites_change = changes.site_ids.is_some();
    let user = users::update(conn, id, changes)?;
    if sites_change {
        notify_access_lost(conn, id, &user.site_ids)?;
    }
    Ok(user)
}

/// Tells `user_id`'s phone of each open case assigned to them at a site
/// they no longer work at (`sites` are those they still do), so it drops
/// them on its next sync. The case keeps its assignee until a coordinator
/// gives it to someone else: its list flags it as needing one.
pub fn notify_access_lost(
    conn: &mut DbConnection,
    user_id: &str,
    sites: &[String],
) -> AppResult<usize> {
    let lost: Vec<String> = cases::table
        .filter(cases::assigned_to.eq(user_id))
        .filter(cases::site_id.ne_all(sites))
        .filter(cases::closed_at.is_null())
        .filter(cases::merged_into.is_null())
        .select(cases::id)
        .load(conn)?;
    for case_id in &lost {
        changes::record_change(conn, ChangeKind::Case, case_id, Some(user_id))?;
    }
    Ok(lost.len())
}

/// What a phone keeps of a case: enough to find the child's file again and
/// know what is due, no personal data.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PhoneCase {
    pub id: String,
    pub number: Option<String>,
    pub programme: String,
    pub site_id: String,
    pub state: String,
    pub version: i64,
    pub next_deadlines: Vec<NextDeadline>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NextDeadline {
    pub rule: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub due_at: chrono::NaiveDateTime,
    /// `due_at` in the programme's time zone, for the worker to read.
    pub due_local: String,
}

impl PhoneCase {
    /// What a phone keeps of each of `cases`, in their order, with one
    /// read of their deadlines for a page of cases. The read goes by the
    /// key (`case_id` first) and keeps the open ones here: asked for
    /// `outcome = 'open' ORDER BY due_at`, SQLite took the index on
    /// (outcome, due_at) and walked every open deadline of the database
    /// for each case — a full sync of 50 cases took minutes at 50,000
    /// cases (#19 item 7).
    pub fn of_all(conn: &mut DbConnection, cases: Vec<Case>) -> AppResult<Vec<PhoneCase>> {
        let mut open: std::collections::HashMap<String, Vec<(chrono::NaiveDateTime, String)>> =
            std::collections::HashMap::new();
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        for page in ids.chunks(500) {
            let rows = case_deadlines::table
                .filter(case_deadlines::case_id.eq_any(page))
                .select((
                    case_deadlines::case_id,
                    case_deadlines::rule_id,
                    case_deadlines::outcome,
                    case_deadlines::due_at,
                ))
                .load::<(String, String, String, chrono::NaiveDateTime)>(conn)?;
            for (case_id, rule, outcome, due_at) in rows {
                if outcome == "open" {
                    open.entry(case_id).or_default().push((due_at, rule));
                }
            }
        }
        cases
            .into_iter()
            .map(|c| {
                let mut due = open.remove(&c.id).unwrap_or_default();
                due.sort();
                let calendar = &reconcile::programme_of(&c.programme)?.calendar;
                let next_deadlines = due
                    .into_iter()
                    .map(|(due_at, rule)| NextDeadline {
                        due_local: calendar.local_rfc3339(due_at.and_utc()),
                        rule,
                        due_at,
                    })
                    .collect();
                Ok(PhoneCase {
                    id: c.id,
                    number: c.number,
                    programme: c.programme,
                    site_id: c.site_id,
                    state: c.state,
                    version: c.version,
                    next_deadlines,
                })
            })
            .collect()
    }
}

/// Whether a phone of `who` should hold this case: open, assigned to them,
/// at one of their sites (site membership is the access boundary).
pub fn belongs_on_phone_of(case: &Case, who: &Principal) -> bool {
    case.is_open()
        && case.assigned_to.as_deref() == Some(who.user_id.as_str())
        && who.is_at_site(&case.site_id)
}

/// The open cases assigned to `who` at their sites.
pub fn assigned_open(conn: &mut DbConnection, who: &Principal) -> AppResult<Vec<Case>> {
    Ok(cases::table
        .filter(cases::assigned_to.eq(&who.user_id))
        .filter(cases::site_id.eq_any(&who.site_ids))
        .filter(cases::closed_at.is_null())
        .filter(cases::merged_into.is_null())
        .order(cases::created_at)
        .select(Case::as_select())
        .load(conn)?)
}
