//! What coordinators and workers read about cases: one case with its facts
//! and deadlines, its timeline, lists with filters, the morning list of
//! deadlines. Access: a field worker sees the cases assigned to them, a
//! coordinator the cases of their sites; nobody else reads case content.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::fold::{self, Late, Status};
use super::reconcile::programme_of;
use super::timeline::{self, DeadlineRecord, EventRow};
use super::{break_glass, find, Case};
use crate::auth::policy::{self, CaseAccess, CaseScope};
use crate::auth::sites::ProgrammeCode;
use crate::auth::{Principal, Role};
use crate::db::schema::{case_deadlines, cases, conflicts, user_sites, users};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::{holidays, Programme};

/// The case `id` if `who` may read it, and why they may: 404 when it does
/// not exist, 403 when it is someone else's and no break-glass grant of
/// theirs covers it.
pub fn readable(
    conn: &mut DbConnection,
    who: &Principal,
    id: &str,
    now: DateTime<Utc>,
) -> AppResult<(Case, CaseAccess)> {
    let case = find(conn, id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    let access = access_to(conn, who, &case, now)?;
    Ok((case, access))
}

/// Whether `who` may read `case` now (the policy decides; the grant table
/// is asked only when the policy alone would refuse).
pub fn access_to(
    conn: &mut DbConnection,
    who: &Principal,
    case: &Case,
    now: DateTime<Utc>,
) -> AppResult<CaseAccess> {
    match policy::read_case(who, case.scope(), false) {
        Ok(access) => Ok(access),
        Err(refused) if who.role == Role::Coordinator => {
            let granted = break_glass::active(conn, &who.user_id, &case.id, now)?;
            policy::read_case(who, case.scope(), granted).map_err(|_| refused)
        }
        Err(refused) => Err(refused),
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadlineView {
    pub rule: String,
    pub title: String,
    pub occurrence: i32,
    pub started_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// `due_at` in the programme's time zone, for people.
    pub due_local: String,
    pub status: Status,
    /// When it was met, or stopped applying.
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
    /// How late it was met or missed, or is (overdue); absent when on time.
    pub late: Option<Late>,
    pub responsible: String,
    pub source: String,
}

fn status_of(row: &DeadlineRecord, now: DateTime<Utc>) -> Status {
    match (row.outcome.as_str(), row.on_time) {
        ("met", Some(true)) => Status::MetOnTime,
        ("met", _) => Status::MetLate,
        ("not_applicable", _) => Status::NotApplicable,
        ("missed", _) => Status::Missed,
        _ if now > row.due_at.and_utc() => Status::Overdue,
        _ if now >= row.soon_at.and_utc() => Status::DueSoon,
        _ => Status::Upcoming,
    }
}

fn deadline_views(
    conn: &mut DbConnection,
    programme: &Programme,
    case_id: &str,
    now: DateTime<Utc>,
) -> AppResult<Vec<DeadlineView>> {
    let rows: Vec<DeadlineRecord> = case_deadlines::table
        .filter(case_deadlines::case_id.eq(case_id))
        .order((case_deadlines::due_at, case_deadlines::rule_id))
        .select(DeadlineRecord::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let rule = programme.rule(&row.rule_id);
            let status = status_of(&row, now);
            let due_at = row.due_at.and_utc();
            let late_at = match status {
                Status::Overdue => Some(now),
                Status::MetLate | Status::Missed => row.met_at.map(|t| t.and_utc()),
                _ => None,
            };
            DeadlineView {
                title: rule.map(|r| r.title.clone()).unwrap_or_default(),
                responsible: rule.map(|r| r.responsible.clone()).unwrap_or_default(),
                source: rule.map(|r| r.source.clone()).unwrap_or_default(),
                status,
                late: late_at
                    .and_then(|at| Late::of(&programme.calendar, row.late_in_days, due_at, at)),
                due_local: programme.calendar.local_rfc3339(due_at),
                rule: row.rule_id,
                occurrence: row.occurrence,
                started_at: row.started_at.and_utc(),
                due_at,
                ended_at: row.met_at.map(|t| t.and_utc()),
                ended_by: row.ended_by,
            }
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaseView {
    pub id: String,
    pub number: Option<String>,
    pub programme: String,
    pub site_id: String,
    pub child_id: Option<String>,
    /// 0 for a first admission, 1 for the first readmission, …
    pub admission: i32,
    pub state: String,
    pub state_title: String,
    pub assigned_to: Option<String>,
    pub version: i64,
    pub opened_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub merged_into: Option<String>,
    pub facts: BTreeMap<String, Value>,
    pub deadlines: Vec<DeadlineView>,
    pub open_conflicts: i64,
    pub family_group_id: Option<String>,
    /// The cases of the child's siblings (one case per child, §3.5 F2).
    pub siblings: Vec<super::children::CaseRef>,
}

pub fn view(conn: &mut DbConnection, case: Case, now: DateTime<Utc>) -> AppResult<CaseView> {
    let programme = programme_of(&case.programme)?;
    let deadlines = deadline_views(conn, &programme, &case.id, now)?;
    let open_conflicts = conflicts::table
        .filter(conflicts::case_id.eq(&case.id))
        .filter(conflicts::status.eq(super::conflicts::OPEN))
        .count()
        .get_result(conn)?;
    let (family_group_id, siblings) = match &case.child_id {
        Some(child) => super::children::siblings(conn, child)?,
        None => (None, Vec::new()),
    };
    Ok(CaseView {
        family_group_id,
        siblings,
        state_title: programme
            .state(&case.state)
            .map(|s| s.title.clone())
            .unwrap_or_default(),
        facts: serde_json::from_str(&case.facts).unwrap_or_default(),
        id: case.id,
        number: case.number,
        programme: case.programme,
        site_id: case.site_id,
        child_id: case.child_id,
        admission: case.admission,
        state: case.state,
        assigned_to: case.assigned_to,
        version: case.version,
        opened_at: case.opened_at.map(|t| t.and_utc()),
        closed_at: case.closed_at.map(|t| t.and_utc()),
        merged_into: case.merged_into,
        deadlines,
        open_conflicts,
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub id: String,
    pub name: String,
    /// `submission` or `action`.
    pub kind: String,
    /// As answered on the form (or when the action was taken).
    pub occurred_at: String,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: String,
    /// The case version this event made (arrival order).
    pub seq: i64,
    pub base_version: Option<i64>,
    /// An edit replaced it: kept in the history, out of the fold.
    pub superseded: bool,
    pub state_before: Option<String>,
    pub state_after: Option<String>,
    pub facts: serde_json::Map<String, Value>,
    pub detail: Option<Value>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub case_id: String,
    pub number: Option<String>,
    pub state: String,
    /// In the order they happened; superseded events after them.
    pub events: Vec<TimelineEntry>,
    pub deadlines: Vec<DeadlineView>,
}

pub fn timeline(conn: &mut DbConnection, case: &Case, now: DateTime<Utc>) -> AppResult<Timeline> {
    let programme = programme_of(&case.programme)?;
    let calendar = holidays::calendar(conn, &programme)?;
    let rows = timeline::events(conn, &case.id)?;
    let mut input = timeline::fold_input(&calendar, &rows);
    let folded = fold::fold(&programme, &calendar, &mut input);
    let entry = |row: &EventRow, step: Option<&fold::Step>| TimelineEntry {
        id: row.id.clone(),
        name: row.name.clone(),
        kind: row.kind.clone(),
        occurred_at: row.occurred_at.clone(),
        recorded_at: row.recorded_at.and_utc(),
        recorded_by: row.recorded_by.clone(),
        seq: row.seq,
        base_version: row.base_version,
        superseded: row.superseded,
        state_before: step.map(|s| s.state_before.clone()),
        state_after: step.map(|s| s.state_after.clone()),
        facts: row.facts(),
        detail: row
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok()),
    };
    let mut events: Vec<TimelineEntry> = folded
        .steps
        .iter()
        .filter_map(|step| {
            rows.iter()
                .find(|r| r.id == step.event_id)
                .map(|row| entry(row, Some(step)))
        })
        .collect();
    events.extend(rows.iter().filter(|r| r.superseded).map(|r| entry(r, None)));
    Ok(Timeline {
        case_id: case.id.clone(),
        number: case.number.clone(),
        state: case.state.clone(),
        events,
        deadlines: deadline_views(conn, &programme, &case.id, now)?,
    })
}

/// The id of the site a filter names by id or code. An unknown one is a
/// 422, never an empty list that reads as "nothing overdue".
pub fn site_named(conn: &mut DbConnection, name: Option<&str>) -> AppResult<Option<String>> {
    let Some(name) = name else { return Ok(None) };
    match crate::auth::sites::resolve(conn, name)? {
        Some(site) => Ok(Some(site.id)),
        None => Err(AppError::invalid_field(
            "/site",
            format!("no site has the id or code {name:?}"),
        )),
    }
}

/// The id of the user a filter names by id or username; unknown: 422.
fn user_named(conn: &mut DbConnection, name: Option<&str>) -> AppResult<Option<String>> {
    let Some(name) = name else { return Ok(None) };
    match crate::auth::users::resolve(conn, name)? {
        Some(user) => Ok(Some(user.id)),
        None => Err(AppError::invalid_field(
            "/assignee",
            format!("no user has the id or username {name:?}"),
        )),
    }
}

/// The order of a list of cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseSort {
    /// Oldest first (by when the server opened them).
    #[default]
    Oldest,
    /// Newest first.
    Newest,
    /// The soonest next deadline first (the most overdue at the top);
    /// cases without an open deadline last.
    Due,
}

impl CaseSort {
    fn tag(self) -> &'static str {
        match self {
            CaseSort::Oldest => "o",
            CaseSort::Newest => "n",
            CaseSort::Due => "d",
        }
    }
}

/// Filters of `GET /cases`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CaseFilter {
    #[param(value_type = Option<ProgrammeCode>)]
    pub programme: Option<String>,
    /// A site's code or id.
    pub site: Option<String>,
    /// A workflow state of the programme.
    pub state: Option<String>,
    /// A user's id or username.
    pub assignee: Option<String>,
    /// Only cases with an overdue deadline.
    pub overdue: Option<bool>,
    /// Only open cases nobody of their site works on: nobody assigned, or
    /// the assignee left the site or was disabled.
    pub needs_assignee: Option<bool>,
    /// Closed cases too (default: open ones only).
    pub include_closed: Option<bool>,
    /// The case with this number (as its programme writes it).
    pub number: Option<String>,
    /// `oldest` (default), `newest` or `due`.
    #[param(value_type = Option<CaseSort>)]
    pub sort: Option<CaseSort>,
    /// The `next_cursor` of the page before (of the same sort).
    pub cursor: Option<String>,
    /// Cases per page, 100 by default; kept within 1–500.
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaseSummary {
    pub id: String,
    pub number: Option<String>,
    pub programme: String,
    pub site_id: String,
    pub state: String,
    pub assigned_to: Option<String>,
    pub version: i64,
    pub opened_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub next_due_at: Option<DateTime<Utc>>,
    pub overdue: bool,
    /// Open, and nobody of its site works on it (nobody is assigned, or the
    /// assignee left the site or was disabled): a coordinator must give it
    /// to someone.
    pub needs_assignee: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

const MAX_PAGE: i64 = 500;

/// Where a page of `sort` ended: the last case's sort key (its opening,
/// or its next deadline, `-` for none) and id.
fn encode_cursor(sort: CaseSort, at: Option<NaiveDateTime>, id: &str) -> String {
    let at = at.map_or("-".to_string(), |t| {
        t.and_utc().timestamp_micros().to_string()
    });
    URL_SAFE_NO_PAD.encode(format!("{}|{at}|{id}", sort.tag()))
}

/// Reads a cursor `encode_cursor` made for `sort` (or, for the oldest
/// first, one of before sorting: `micros|id`); anything else is 400.
pub fn decode_cursor(cursor: &str, sort: CaseSort) -> AppResult<(Option<NaiveDateTime>, String)> {
    let bad = || AppError::bad_request("cursor: not a cursor this server gave for this sort");
    let text = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let parts: Vec<&str> = text.splitn(3, '|').collect();
    let (tag, at, id) = match parts[..] {
        [at, id] => ("o", at, id),
        [tag, at, id] => (tag, at, id),
        _ => return Err(bad()),
    };
    if tag != sort.tag() {
        return Err(bad());
    }
    let at = match at {
        "-" if sort == CaseSort::Due => None,
        micros => Some(
            micros
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(bad)?
                .naive_utc(),
        ),
    };
    Ok((at, id.to_string()))
}

/// A `programme=` filter: one the server has, or 422 (not an empty list,
/// which would read as "no cases").
fn programme_named(programme: Option<&str>) -> AppResult<Option<String>> {
    match programme {
        None => Ok(None),
        Some(p) if crate::auth::sites::PROGRAMMES.contains(&p) => Ok(Some(p.to_string())),
        Some(_) => Err(AppError::invalid_field(
            "/programme",
            "must be \"kz\" or \"bt\"",
        )),
    }
}

/// The cases `who` may read that pass `filter`, in its sort (oldest first
/// unless it says), a page at a time.
///
/// Read one site at a time and merged: each site's query walks an index in
/// the page's order (`cases_site_created`, `cases_site_due`, or by assignee
/// `cases_assignee_*`) and stops at the page's end, so a page costs the
/// same at 100,000 cases as at 100 (#18); one query over several sites
/// would read and sort all of them.
pub fn list(
    conn: &mut DbConnection,
    who: &Principal,
    filter: &CaseFilter,
    now: DateTime<Utc>,
) -> AppResult<Page<CaseSummary>> {
    let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let (mut site_ids, own) = match policy::list_cases(who)? {
        CaseScope::Assignee { user_id, site_ids } => (site_ids, Some(user_id)),
        CaseScope::Sites(sites) => (sites, None),
    };
    let wanted = ListQuery {
        programme: programme_named(filter.programme.as_deref())?,
        assignee: user_named(conn, filter.assignee.as_deref())?,
        own,
        state: filter.state.clone(),
        overdue_at: (filter.overdue == Some(true)).then(|| now.naive_utc()),
        number: filter.number.as_ref().map(|n| n.trim().to_string()),
        needs_assignee: filter.needs_assignee,
        include_closed: filter.include_closed == Some(true),
    };
    if let Some(site) = site_named(conn, filter.site.as_deref())? {
        site_ids.retain(|s| *s == site);
    }
    let sort = filter.sort.unwrap_or_default();
    let cursor = match &filter.cursor {
        None => None,
        Some(cursor) => match (sort, decode_cursor(cursor, sort)?) {
            (CaseSort::Oldest | CaseSort::Newest, (None, _)) => {
                return Err(AppError::bad_request(
                    "cursor: not a cursor this server gave for this sort",
                ))
            }
            (_, at_id) => Some(at_id),
        },
    };
    let workers = if wanted.needs_assignee.is_some() {
        site_workers(conn, &site_ids)?
    } else {
        Default::default()
    };
    let mut rows: Vec<Case> = Vec::new();
    for site in &site_ids {
        rows.extend(wanted.site_page(conn, site, &workers, sort, cursor.as_ref(), limit + 1)?);
    }
    let key = |c: &Case| match sort {
        CaseSort::Due => (c.next_due_at.is_none(), c.next_due_at, c.id.clone()),
        _ => (false, Some(c.created_at), c.id.clone()),
    };
    rows.sort_by_key(key);
    if sort == CaseSort::Newest {
        rows.reverse();
    }
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|c| {
            let at = match sort {
                CaseSort::Due => c.next_due_at,
                _ => Some(c.created_at),
            };
            encode_cursor(sort, at, &c.id)
        })
    } else {
        None
    };
    let workers = if workers.is_empty() {
        working_assignees(conn, &rows)?
    } else {
        workers
    };
    let items = rows
        .into_iter()
        .map(|c| CaseSummary {
            needs_assignee: c.is_open()
                && !c
                    .assigned_to
                    .as_ref()
                    .is_some_and(|a| workers.contains(&(a.clone(), c.site_id.clone()))),
            overdue: c.next_due_at.is_some_and(|t| t.and_utc() < now),
            id: c.id,
            number: c.number,
            programme: c.programme,
            site_id: c.site_id,
            state: c.state,
            assigned_to: c.assigned_to,
            version: c.version,
            opened_at: c.opened_at.map(|t| t.and_utc()),
            closed_at: c.closed_at.map(|t| t.and_utc()),
            next_due_at: c.next_due_at.map(|t| t.and_utc()),
        })
        .collect();
    Ok(Page { items, next_cursor })
}

diesel::define_sql_function! {
    /// `COALESCE(a, b)`; with the same column twice, the column as a value
    /// no index is asked for.
    #[sql_name = "COALESCE"]
    fn same_time(
        a: diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
        b: diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Timestamp>;
}

/// A case list's filters, resolved.
struct ListQuery {
    programme: Option<String>,
    assignee: Option<String>,
    /// A field worker's own cases only.
    own: Option<String>,
    state: Option<String>,
    overdue_at: Option<NaiveDateTime>,
    number: Option<String>,
    needs_assignee: Option<bool>,
    include_closed: bool,
}

type Pairs = std::collections::HashSet<(String, String)>;

impl ListQuery {
    /// The filtered cases of one site, without order or page.
    fn of_site<'a>(
        &self,
        site: &str,
        workers: &Pairs,
    ) -> cases::BoxedQuery<'a, crate::db::MultiBackend> {
        let mut query = cases::table
            .filter(cases::site_id.eq(site.to_string()))
            .into_boxed();
        if let Some(user) = &self.own {
            query = query.filter(cases::assigned_to.eq(user.clone()));
        }
        if let Some(p) = &self.programme {
            query = query.filter(cases::programme.eq(p.clone()));
        }
        if let Some(state) = &self.state {
            query = query.filter(cases::state.eq(state.clone()));
        }
        if let Some(assignee) = &self.assignee {
            query = query.filter(cases::assigned_to.eq(assignee.clone()));
        }
        if let Some(t) = self.overdue_at {
            // Hidden from the planner in an expression, so that the
            // oldest/newest orders walk `cases_site_created` (testing it on
            // the entry) instead of reading every overdue case through
            // `cases_site_due` and sorting them (620 ms at 22,000). The due
            // order asks `cases_site_due` by its own range.
            query = query.filter(same_time(cases::next_due_at, cases::next_due_at).lt(t));
        }
        if let Some(number) = &self.number {
            query = query.filter(cases::number.eq(number.clone()));
        }
        if let Some(wanted) = self.needs_assignee {
            // The site's working members, from `site_workers`: the same
            // rule as the summary's `needs_assignee`, without a subquery
            // per case.
            let here: Vec<String> = workers
                .iter()
                .filter(|(_, s)| s == site)
                .map(|(u, _)| u.clone())
                .collect();
            query = if wanted {
                query
                    .filter(
                        cases::assigned_to
                            .is_null()
                            .or(cases::assigned_to.ne_all(here)),
                    )
                    .filter(cases::closed_at.is_null())
                    .filter(cases::merged_into.is_null())
            } else {
                query.filter(cases::assigned_to.eq_any(here))
            };
        }
        if !self.include_closed {
            query = query
                .filter(cases::closed_at.is_null())
                .filter(cases::merged_into.is_null());
        }
        query
    }

    /// The first `limit` cases of one site in `sort` after `cursor`.
    fn site_page(
        &self,
        conn: &mut DbConnection,
        site: &str,
        workers: &Pairs,
        sort: CaseSort,
        cursor: Option<&(Option<NaiveDateTime>, String)>,
        limit: i64,
    ) -> AppResult<Vec<Case>> {
        let query = self.of_site(site, workers).select(Case::as_select());
        // Each comparison `>=`/`<=` first: a range an index can seek to.
        Ok(match sort {
            CaseSort::Oldest => {
                let mut query = query.order((cases::created_at, cases::id));
                if let Some((Some(at), id)) = cursor {
                    query = query
                        .filter(cases::created_at.ge(*at))
                        .filter(cases::created_at.gt(*at).or(cases::id.gt(id.clone())));
                }
                query.limit(limit).load(conn)?
            }
            CaseSort::Newest => {
                let mut query = query.order((cases::created_at.desc(), cases::id.desc()));
                if let Some((Some(at), id)) = cursor {
                    query = query
                        .filter(cases::created_at.le(*at))
                        .filter(cases::created_at.lt(*at).or(cases::id.lt(id.clone())));
                }
                query.limit(limit).load(conn)?
            }
            // Cases with a next deadline by it, then those without by id:
            // two walks of `cases_site_due` (NULLs sort first in SQLite and
            // last in PostgreSQL). The index has no id after the due time,
            // which many cases share (a case id there costs every
            // submission a random index leaf, migration 000031), so only
            // the cases of one due time are sorted by id.
            CaseSort::Due => {
                let mut rows: Vec<Case> = Vec::new();
                let mut after_null: Option<String> = None;
                match cursor {
                    Some((None, id)) => after_null = Some(id.clone()),
                    Some((Some(at), id)) => {
                        rows = query
                            .filter(cases::next_due_at.ge(*at))
                            .filter(cases::next_due_at.gt(*at).or(cases::id.gt(id.clone())))
                            .order((cases::next_due_at, cases::id))
                            .limit(limit)
                            .load(conn)?;
                    }
                    None => {
                        rows = query
                            .filter(cases::next_due_at.is_not_null())
                            .order((cases::next_due_at, cases::id))
                            .limit(limit)
                            .load(conn)?;
                    }
                }
                if (rows.len() as i64) < limit {
                    let mut query = self
                        .of_site(site, workers)
                        .select(Case::as_select())
                        .filter(cases::next_due_at.is_null());
                    if let Some(id) = after_null {
                        query = query.filter(cases::id.gt(id));
                    }
                    let rest: Vec<Case> = query
                        .order(cases::id)
                        .limit(limit - rows.len() as i64)
                        .load(conn)?;
                    rows.extend(rest);
                }
                rows
            }
        })
    }
}

/// The (user, site) pairs of `sites` whose user is an active member there:
/// who may work on that site's cases.
fn site_workers(conn: &mut DbConnection, sites: &[String]) -> AppResult<Pairs> {
    let pairs: Vec<(String, String)> = user_sites::table
        .inner_join(users::table)
        .filter(user_sites::site_id.eq_any(sites))
        .filter(users::active.eq(true))
        .select((user_sites::user_id, user_sites::site_id))
        .load(conn)?;
    Ok(pairs.into_iter().collect())
}

/// The (assignee, site) pairs among `rows` where the assignee is an active
/// member of the case's site, so may work on it.
fn working_assignees(conn: &mut DbConnection, rows: &[Case]) -> AppResult<Pairs> {
    let assignees: Vec<&String> = rows.iter().filter_map(|c| c.assigned_to.as_ref()).collect();
    if assignees.is_empty() {
        return Ok(Default::default());
    }
    let pairs: Vec<(String, String)> = user_sites::table
        .inner_join(users::table)
        .filter(user_sites::user_id.eq_any(assignees))
        .filter(users::active.eq(true))
        .select((user_sites::user_id, user_sites::site_id))
        .load(conn)?;
    Ok(pairs.into_iter().collect())
}

/// Which deadlines `GET /deadlines` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DueStatus {
    Overdue,
    DueSoon,
    Upcoming,
}

/// Filters of `GET /deadlines`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadlineFilter {
    /// `overdue`, `due_soon` or `upcoming` (default: overdue and due soon).
    #[param(value_type = Option<DueStatus>)]
    pub status: Option<String>,
    /// A site's code or id.
    pub site: Option<String>,
    /// A user's id or username.
    pub assignee: Option<String>,
    #[param(value_type = Option<ProgrammeCode>)]
    pub programme: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DueItem {
    pub case_id: String,
    pub case_number: Option<String>,
    pub programme: String,
    pub site_id: String,
    pub assigned_to: Option<String>,
    pub rule: String,
    pub title: String,
    pub responsible: String,
    pub occurrence: i32,
    pub due_at: DateTime<Utc>,
    /// `due_at` in the programme's time zone, for people.
    pub due_local: String,
    pub status: Status,
    /// How late it is, when overdue: days for a limit counted in days,
    /// else hours.
    pub late: Option<Late>,
    pub source: String,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = case_deadlines)]
struct DueRow {
    case_id: String,
    programme: String,
    site_id: String,
    assigned_to: Option<String>,
    #[diesel(column_name = rule_id)]
    rule: String,
    occurrence: i32,
    due_at: NaiveDateTime,
    soon_at: NaiveDateTime,
    late_in_days: bool,
}

/// The open deadlines of the cases `who` may read: a coordinator's morning
/// list, most overdue first.
pub fn due(
    conn: &mut DbConnection,
    who: &Principal,
    filter: &DeadlineFilter,
    now: DateTime<Utc>,
) -> AppResult<Vec<DueItem>> {
    due_in(conn, &policy::list_cases(who)?, filter, now)
}

/// The most deadlines `due_in` lists.
const DUE_LIMIT: i64 = 5000;

/// The open deadlines within `scope` (the shell's `cases overdue` has no
/// signed-in user: it runs on the server, with the server's rights), most
/// urgent first (by due time, then case), at most [`DUE_LIMIT`].
///
/// One walk of `case_deadlines_site_rule` (the index Today reads) per
/// site and deadline rule, each stopping at the limit, then merged: no
/// index of every open deadline by due time is kept, since each cost every
/// stored form about a page write (migration 000034). A rule with more
/// than the limit open at one site is cut by due time alone, so of the
/// deadlines due at the cut's very moment some may be left out.
pub fn due_in(
    conn: &mut DbConnection,
    scope: &CaseScope,
    filter: &DeadlineFilter,
    now: DateTime<Utc>,
) -> AppResult<Vec<DueItem>> {
    let (mut site_ids, own) = match scope {
        CaseScope::Assignee { user_id, site_ids } => (site_ids.clone(), Some(user_id.clone())),
        CaseScope::Sites(sites) => (sites.clone(), None),
    };
    let status = match filter.status.as_deref() {
        None => None,
        Some("overdue") => Some(DueStatus::Overdue),
        Some("due_soon") => Some(DueStatus::DueSoon),
        Some("upcoming") => Some(DueStatus::Upcoming),
        Some(_) => {
            return Err(AppError::invalid_field(
                "/status",
                "overdue, due_soon or upcoming",
            ))
        }
    };
    if let Some(site) = site_named(conn, filter.site.as_deref())? {
        site_ids.retain(|s| *s == site);
    }
    let assignee = user_named(conn, filter.assignee.as_deref())?;
    let programme = programme_named(filter.programme.as_deref())?;
    let mut rows: Vec<DueRow> = Vec::new();
    for site in crate::auth::sites::list(conn, Some(&site_ids))? {
        if programme.as_ref().is_some_and(|p| *p != site.programme) {
            continue;
        }
        let Ok(rules) = programme_of(&site.programme) else {
            continue;
        };
        for rule in &rules.deadlines {
            let mut query = open_deadlines()
                .filter(case_deadlines::site_id.eq(site.id.clone()))
                .filter(case_deadlines::rule_id.eq(rule.id.clone()));
            for user in own.iter().chain(assignee.iter()) {
                query = query.filter(case_deadlines::assigned_to.eq(user.clone()));
            }
            rows.extend(
                with_status(query, status, now)
                    .order(case_deadlines::due_at)
                    .limit(DUE_LIMIT)
                    .select(DueRow::as_select())
                    .load::<DueRow>(conn)?,
            );
        }
    }
    rows.sort_by(|a, b| (a.due_at, &a.case_id).cmp(&(b.due_at, &b.case_id)));
    rows.truncate(DUE_LIMIT as usize);
    due_items(conn, rows, now)
}

type OpenDeadlines<'a> = case_deadlines::BoxedQuery<'a, crate::db::MultiBackend>;

/// The open deadlines (the case's number comes after, by `due_items`, so
/// that counting them reads `case_deadlines` alone).
fn open_deadlines<'a>() -> OpenDeadlines<'a> {
    case_deadlines::table
        .filter(case_deadlines::outcome.eq("open"))
        .into_boxed()
}

/// Which open deadlines a status means at `now`; none: overdue and due
/// soon (the morning list).
fn with_status(
    query: OpenDeadlines<'_>,
    status: Option<DueStatus>,
    now: DateTime<Utc>,
) -> OpenDeadlines<'_> {
    let t = now.naive_utc();
    match status {
        None => query.filter(case_deadlines::soon_at.le(t)),
        Some(DueStatus::Overdue) => query.filter(case_deadlines::due_at.lt(t)),
        Some(DueStatus::DueSoon) => query
            .filter(case_deadlines::soon_at.le(t))
            .filter(case_deadlines::due_at.ge(t)),
        Some(DueStatus::Upcoming) => query.filter(case_deadlines::soon_at.gt(t)),
    }
}

/// The items of `rows`, with their cases' numbers.
fn due_items(
    conn: &mut DbConnection,
    rows: Vec<DueRow>,
    now: DateTime<Utc>,
) -> AppResult<Vec<DueItem>> {
    let ids: Vec<&str> = rows.iter().map(|r| r.case_id.as_str()).collect();
    let numbers: std::collections::HashMap<String, Option<String>> = cases::table
        .filter(cases::id.eq_any(&ids))
        .select((cases::id, cases::number))
        .load::<(String, Option<String>)>(conn)?
        .into_iter()
        .collect();
    rows.into_iter()
        .map(|row| {
            let number = numbers.get(&row.case_id).cloned().flatten();
            due_item(row, number, now)
        })
        .collect()
}

fn due_item(row: DueRow, number: Option<String>, now: DateTime<Utc>) -> AppResult<DueItem> {
    let DueRow {
        case_id,
        programme,
        site_id,
        assigned_to,
        rule,
        occurrence,
        due_at,
        soon_at,
        late_in_days,
    } = row;
    let rules = programme_of(&programme)?;
    let found = rules.rule(&rule);
    let status = if now > due_at.and_utc() {
        Status::Overdue
    } else if now >= soon_at.and_utc() {
        Status::DueSoon
    } else {
        Status::Upcoming
    };
    Ok(DueItem {
        case_id,
        case_number: number,
        programme,
        site_id,
        assigned_to,
        title: found.map(|r| r.title.clone()).unwrap_or_default(),
        responsible: found.map(|r| r.responsible.clone()).unwrap_or_default(),
        source: found.map(|r| r.source.clone()).unwrap_or_default(),
        rule,
        occurrence,
        late: (status == Status::Overdue)
            .then(|| Late::of(&rules.calendar, late_in_days, due_at.and_utc(), now))
            .flatten(),
        due_local: rules.calendar.local_rfc3339(due_at.and_utc()),
        due_at: due_at.and_utc(),
        status,
    })
}

/// One rule's overdue (or due-soon) deadlines at one site: how many, and
/// the most urgent first few.
#[derive(Debug, Clone, Serialize)]
pub struct RuleDue {
    pub site_id: String,
    pub rule: String,
    pub title: String,
    pub status: DueStatus,
    /// How many, counted up to `count_up_to`.
    pub count: i64,
    /// There are more than `count` (it reached `count_up_to`).
    pub more: bool,
    /// The first `per_rule` of them, most overdue (or soonest due) first,
    /// in the order of `due`.
    pub items: Vec<DueItem>,
}

/// Today's deadlines of the cases `who` may read: per site, rule and
/// status (overdue, due soon), the count (up to `count_up_to`: past it,
/// "more than") and the first `per_rule` items of `due`'s list. Each part is an index walk of
/// `case_deadlines_site_rule` that stops at its page or counts from the
/// index alone, so it costs the same with
/// 100 deadlines overdue at a site as with 100,000 (#18); `due` itself is
/// the full list.
pub fn due_by_rule(
    conn: &mut DbConnection,
    who: &Principal,
    now: DateTime<Utc>,
    per_rule: i64,
    count_up_to: i64,
) -> AppResult<Vec<RuleDue>> {
    let (site_ids, own) = match policy::list_cases(who)? {
        CaseScope::Assignee { user_id, site_ids } => (site_ids, Some(user_id)),
        CaseScope::Sites(sites) => (sites, None),
    };
    let sites = crate::auth::sites::list(conn, Some(&site_ids))?;
    let t = now.naive_utc();
    let mut found: Vec<(RuleDue, Vec<DueRow>)> = Vec::new();
    for site in sites {
        let Ok(programme) = programme_of(&site.programme) else {
            continue;
        };
        for rule in &programme.deadlines {
            let of_rule = |status: Option<DueStatus>| {
                let query = open_deadlines()
                    .filter(case_deadlines::site_id.eq(site.id.clone()))
                    .filter(case_deadlines::rule_id.eq(rule.id.clone()));
                let query = match &own {
                    Some(user) => query.filter(case_deadlines::assigned_to.eq(user.clone())),
                    None => query,
                };
                with_status(query, status, now)
            };
            // By due time alone: deadlines of one due time (many share
            // it) come in the order they were written, as the index keeps
            // them; ordering those by case too read and sorted all of them
            // for each rule (Today 161 ms p50 at 100,000 cases, release).
            let first = |status: Option<DueStatus>| {
                of_rule(status)
                    .order(case_deadlines::due_at)
                    .limit(per_rule)
                    .select(DueRow::as_select())
            };
            // Overdue and due soon at once (overdue first, by due time):
            // one query for a rule with none or few; the two lists apart
            // only when there are more than `per_rule`.
            // Counted up to a bound: an exact count of a site's 22,000
            // overdue reads (and decrypts) the whole range of the index,
            // which took 80 of Today's 115 ms (debug build, #18).
            let count = |status: DueStatus, conn: &mut DbConnection| -> AppResult<(i64, bool)> {
                // A column of the index, so no table row is read.
                let n = of_rule(Some(status))
                    .select(case_deadlines::due_at)
                    .limit(count_up_to + 1)
                    .load::<NaiveDateTime>(conn)?
                    .len() as i64;
                Ok((n.min(count_up_to), n > count_up_to))
            };
            let rows: Vec<DueRow> = first(None).load(conn)?;
            let full = rows.len() as i64 == per_rule;
            let (overdue, mut soon): (Vec<DueRow>, Vec<DueRow>) =
                rows.into_iter().partition(|r| r.due_at < t);
            let overdue_count = if overdue.len() as i64 == per_rule {
                count(DueStatus::Overdue, conn)?
            } else {
                (overdue.len() as i64, false)
            };
            if full && !overdue.is_empty() {
                // Those due soon were cut short by the overdue before them.
                soon = first(Some(DueStatus::DueSoon)).load(conn)?;
            }
            let soon_count = if soon.len() as i64 == per_rule {
                count(DueStatus::DueSoon, conn)?
            } else {
                (soon.len() as i64, false)
            };
            for (status, (count, more), rows) in [
                (DueStatus::Overdue, overdue_count, overdue),
                (DueStatus::DueSoon, soon_count, soon),
            ] {
                if rows.is_empty() {
                    continue;
                }
                let group = RuleDue {
                    site_id: site.id.clone(),
                    rule: rule.id.clone(),
                    title: rule.title.clone(),
                    status,
                    count,
                    more,
                    items: Vec::new(),
                };
                found.push((group, rows));
            }
        }
    }
    // The cases' numbers in one read for every group.
    let sizes: Vec<usize> = found.iter().map(|(_, rows)| rows.len()).collect();
    let (mut groups, rows): (Vec<RuleDue>, Vec<Vec<DueRow>>) = found.into_iter().unzip();
    let mut items = due_items(conn, rows.into_iter().flatten().collect(), now)?.into_iter();
    for (group, size) in groups.iter_mut().zip(sizes) {
        group.items = items.by_ref().take(size).collect();
    }
    Ok(groups)
}
