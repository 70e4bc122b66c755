//! Children: one row per child, holding the identity used to propose
//! possible duplicates (normalised name, date of birth, sex) and, for KZ,
//! the number of the child's first admission. Owns `children` and
//! `duplicate_candidates`.

use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::reconcile::programme_of;
use super::{numbers, timeline, Case};
use crate::auth::{policy, Principal};
use crate::db::schema::{case_deadlines, case_events, cases, children, duplicate_candidates};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::{holidays, NumberScheme, Programme};
use crate::time::now;

crate::ids::string_id! {
    /// A proposed pair of possibly duplicate children.
    DuplicateId
}

/// Where the case-opening forms of both programmes ask for the child's name.
pub const CHILD_NAME: &str = "/child/child_name";

/// What identifies a child well enough to suspect a duplicate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub name_key: Option<String>,
    pub date_of_birth: Option<String>,
    pub sex: Option<String>,
}

impl Identity {
    /// From the opening form's data and facts.
    pub fn of(data: &Value, facts: &serde_json::Map<String, Value>) -> Identity {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        Identity {
            name_key: text(data.pointer(CHILD_NAME))
                .map(|n| name_key(&n))
                .filter(|k| !k.is_empty()),
            date_of_birth: text(facts.get("child.date_of_birth")),
            sex: text(facts.get("child.sex")),
        }
    }

    /// A child's name must read as it was written: no NUL, no
    /// bidirectional control that would show a reviewer another name.
    pub fn unsafe_name(data: &Value) -> Option<crate::error::FieldError> {
        let name = data.pointer(CHILD_NAME)?.as_str()?;
        crate::json::unsafe_text(&format!("/data{CHILD_NAME}"), name)
    }
}

/// A name reduced to what survives spelling habits: lower case, letters and
/// digits only, words sorted (so "Aliyev Timur" matches "Timur Aliyev").
pub fn name_key(name: &str) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    words.sort();
    words.join(" ")
}

/// Records a new child at `site_id`; returns its id.
pub fn create(
    conn: &mut DbConnection,
    programme: &Programme,
    site_id: &str,
    identity: &Identity,
) -> AppResult<String> {
    let id = crate::ids::new_row_id();
    diesel::insert_into(children::table)
        .values((
            children::id.eq(&id),
            children::programme.eq(&programme.id),
            children::site_id.eq(site_id),
            children::admissions.eq(1),
            children::name_key.eq(&identity.name_key),
            children::date_of_birth.eq(&identity.date_of_birth),
            children::sex.eq(&identity.sex),
            children::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(id)
}

pub fn set_root_number(conn: &mut DbConnection, child_id: &str, root: &str) -> AppResult<()> {
    diesel::update(children::table.find(child_id))
        .set(children::root_number.eq(root))
        .execute(conn)?;
    Ok(())
}

/// Why two children may be one: each reason with its weight.
fn likeness(a: &Identity, b: &Identity) -> (Vec<&'static str>, i32) {
    let mut reasons = Vec::new();
    let mut score = 0;
    match (&a.name_key, &b.name_key) {
        (Some(x), Some(y)) if x == y => {
            reasons.push("same_name");
            score += 3;
        }
        (Some(x), Some(y)) if strsim::normalized_levenshtein(x, y) >= 0.8 => {
            reasons.push("similar_name");
            score += 2;
        }
        _ => {}
    }
    if a.date_of_birth.is_some() && a.date_of_birth == b.date_of_birth {
        reasons.push("same_date_of_birth");
        score += 2;
    }
    if a.sex.is_some() && a.sex == b.sex {
        reasons.push("same_sex");
        score += 1;
    }
    (reasons, score)
}

/// A pair is proposed when the names match or nearly match and the date
/// of birth or the sex agrees too.
fn is_candidate(reasons: &[&str]) -> bool {
    let named = reasons.contains(&"same_name") || reasons.contains(&"similar_name");
    named && (reasons.contains(&"same_date_of_birth") || reasons.contains(&"same_sex"))
}

/// How many near children an opening compares, and proposes at most.
const LOOK_AT: i64 = 20;
const PROPOSE_AT_MOST: usize = 5;

/// Proposes the earlier children of the site that `child_id` may be: never
/// merged here, only listed for a coordinator to link or dismiss. Returns
/// how many were proposed.
pub fn propose_duplicates(
    conn: &mut DbConnection,
    child_id: &str,
    site_id: &str,
    identity: &Identity,
) -> AppResult<usize> {
    let Some(key) = &identity.name_key else {
        return Ok(0);
    };
    // Three indexed lookups, so an opening costs the same at a site of ten
    // children or ten thousand: the same name, the same birth date, and
    // names in the same alphabetical neighbourhood (first two letters) of
    // the same sex — the similar-name pairs worth a look. A similar name
    // with another birth date and other first letters is not proposed.
    let prefix: String = key.chars().take(2).collect();
    let mut next_prefix = prefix.clone();
    next_prefix.push(char::MAX);
    let select = (
        children::id,
        children::created_at,
        (children::name_key, children::date_of_birth, children::sex),
    );
    type Found = (
        String,
        chrono::NaiveDateTime,
        (Option<String>, Option<String>, Option<String>),
    );
    let mut found: Vec<Found> = children::table
        .filter(children::site_id.eq(site_id))
        .filter(children::name_key.eq(key))
        .select(select)
        .limit(LOOK_AT)
        .load(conn)?;
    if let Some(dob) = &identity.date_of_birth {
        found.extend(
            children::table
                .filter(children::site_id.eq(site_id))
                .filter(children::date_of_birth.eq(dob))
                .select(select)
                .limit(LOOK_AT)
                .load::<Found>(conn)?,
        );
    }
    if let Some(sex) = &identity.sex {
        found.extend(
            children::table
                .filter(children::site_id.eq(site_id))
                .filter(children::name_key.ge(&prefix))
                .filter(children::name_key.lt(&next_prefix))
                .filter(children::sex.eq(sex))
                .select(select)
                .limit(LOOK_AT)
                .load::<Found>(conn)?,
        );
    }
    found.retain(|(id, _, _)| id != child_id);
    found.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    found.dedup_by(|a, b| a.0 == b.0);
    let others: Vec<(String, Identity)> = found
        .into_iter()
        .map(|(id, _, (name_key, date_of_birth, sex))| {
            (
                id,
                Identity {
                    name_key,
                    date_of_birth,
                    sex,
                },
            )
        })
        .collect();
    // The few likeliest, earliest first: a coordinator links to one child,
    // and a name given a thousand times must not propose a thousand pairs.
    let mut likely: Vec<(String, Vec<&str>, i32)> = others
        .into_iter()
        .filter_map(|(other, them)| {
            let (reasons, score) = likeness(identity, &them);
            is_candidate(&reasons).then_some((other, reasons, score))
        })
        .collect();
    likely.sort_by_key(|(_, _, score)| -score);
    likely.truncate(PROPOSE_AT_MOST);
    let rows: Vec<_> = likely
        .into_iter()
        .map(|(other, reasons, score)| {
            (
                duplicate_candidates::id.eq(crate::ids::new_row_id()),
                duplicate_candidates::child_id.eq(child_id),
                duplicate_candidates::other_child_id.eq(other),
                duplicate_candidates::site_id.eq(site_id),
                duplicate_candidates::reasons
                    .eq(serde_json::to_string(&reasons).unwrap_or_default()),
                duplicate_candidates::score.eq(score),
                duplicate_candidates::status.eq(OPEN),
                duplicate_candidates::created_at.eq(now()),
            )
        })
        .collect();
    let proposed = crate::db::insert_rows(
        conn,
        rows,
        |c, rows| {
            diesel::insert_into(duplicate_candidates::table)
                .values(rows)
                .execute(c)
        },
        |c, row| {
            diesel::insert_into(duplicate_candidates::table)
                .values(row)
                .execute(c)
        },
    )?;
    Ok(proposed)
}

pub const OPEN: &str = "open";
pub const LINKED: &str = "linked";
pub const DISMISSED: &str = "dismissed";

/// Where a proposed pair stands: [`OPEN`], [`LINKED`] or [`DISMISSED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateStatus {
    Open,
    Linked,
    Dismissed,
}

/// A coordinator's decision on a pair: the same child, or two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateDecision {
    Link,
    Dismiss,
}

#[derive(Debug, Clone, PartialEq, Serialize, Queryable, Selectable)]
#[diesel(table_name = duplicate_candidates)]
pub struct CandidateRow {
    pub id: String,
    pub child_id: String,
    pub other_child_id: String,
    pub site_id: String,
    pub reasons: String,
    pub score: i32,
    pub status: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub created_at: chrono::NaiveDateTime,
    pub decided_by: Option<String>,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub decided_at: Option<chrono::NaiveDateTime>,
}

/// A proposed pair as a coordinator sees it: case numbers, never names.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    pub id: String,
    pub site_id: String,
    pub status: String,
    pub reasons: Vec<String>,
    pub score: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The child recorded later, and the earlier one it may be.
    pub child: ChildCases,
    pub other_child: ChildCases,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChildCases {
    pub child_id: String,
    pub cases: Vec<CaseRef>,
}

#[derive(Debug, Clone, Serialize, Queryable, utoipa::ToSchema)]
pub struct CaseRef {
    pub case_id: String,
    pub number: Option<String>,
    pub state: String,
    pub closed: bool,
}

fn child_cases(conn: &mut DbConnection, child_id: &str) -> AppResult<ChildCases> {
    type Row = (
        String,
        Option<String>,
        String,
        Option<chrono::NaiveDateTime>,
        Option<String>,
    );
    let rows: Vec<Row> = cases::table
        .filter(cases::child_id.eq(child_id))
        // A total order: a referral merged into a case keeps its admission
        // number, and PostgreSQL returns ties in any order.
        .order((cases::admission, cases::created_at, cases::id))
        .select((
            cases::id,
            cases::number,
            cases::state,
            cases::closed_at,
            cases::merged_into,
        ))
        .load(conn)?;
    Ok(ChildCases {
        child_id: child_id.to_string(),
        cases: rows
            .into_iter()
            .map(|(case_id, number, state, closed_at, merged)| CaseRef {
                case_id,
                number,
                state,
                closed: closed_at.is_some() || merged.is_some(),
            })
            .collect(),
    })
}

fn candidate(conn: &mut DbConnection, row: CandidateRow) -> AppResult<Candidate> {
    Ok(Candidate {
        child: child_cases(conn, &row.child_id)?,
        other_child: child_cases(conn, &row.other_child_id)?,
        reasons: serde_json::from_str(&row.reasons).unwrap_or_default(),
        id: row.id,
        site_id: row.site_id,
        status: row.status,
        score: row.score,
        created_at: row.created_at.and_utc(),
    })
}

/// The proposed pairs of `who`'s sites (open ones unless `status` says),
/// the likeliest first, at most `limit`.
///
/// One site at a time, each an index walk (`duplicate_candidates_site_score`)
/// that stops at `limit`, merged: a site can have thousands of open pairs
/// (#18: 14,589 at one seeded site) and Today shows the first few.
pub fn candidates(
    conn: &mut DbConnection,
    who: &Principal,
    status: Option<&str>,
    site: Option<&str>,
    limit: i64,
) -> AppResult<Vec<Candidate>> {
    let (status, sites) = candidate_scope(conn, who, status, site)?;
    let mut rows: Vec<CandidateRow> = Vec::new();
    for site in sites {
        rows.extend(
            duplicate_candidates::table
                .filter(duplicate_candidates::site_id.eq(site))
                .filter(duplicate_candidates::status.eq(status))
                .select(CandidateRow::as_select())
                .order((
                    duplicate_candidates::score.desc(),
                    duplicate_candidates::created_at,
                ))
                .limit(limit)
                .load(conn)?,
        );
    }
    rows.sort_by(|a, b| b.score.cmp(&a.score).then(a.created_at.cmp(&b.created_at)));
    rows.truncate(limit.max(0) as usize);
    rows.into_iter().map(|row| candidate(conn, row)).collect()
}

/// How many pairs `candidates` would list without a limit.
pub fn candidates_count(
    conn: &mut DbConnection,
    who: &Principal,
    status: Option<&str>,
    site: Option<&str>,
) -> AppResult<i64> {
    let (status, sites) = candidate_scope(conn, who, status, site)?;
    Ok(duplicate_candidates::table
        .filter(duplicate_candidates::site_id.eq_any(sites))
        .filter(duplicate_candidates::status.eq(status))
        .count()
        .get_result(conn)?)
}

/// The status asked (open by default) and the sites of a list of pairs.
fn candidate_scope(
    conn: &mut DbConnection,
    who: &Principal,
    status: Option<&str>,
    site: Option<&str>,
) -> AppResult<(&'static str, Vec<String>)> {
    policy::review_duplicates(who, None)?;
    let status = match status.unwrap_or(OPEN) {
        OPEN => OPEN,
        LINKED => LINKED,
        DISMISSED => DISMISSED,
        _ => {
            return Err(AppError::invalid_field(
                "/status",
                "must be open, linked or dismissed",
            ))
        }
    };
    let mut sites = who.site_ids.clone();
    if let Some(site) = super::views::site_named(conn, site)? {
        sites.retain(|s| *s == site);
    }
    Ok((status, sites))
}

/// The open pairs one of which is `child_id`, for a coordinator of the
/// child's site (the case page's "may be the same child").
pub fn candidates_of_child(
    conn: &mut DbConnection,
    who: &Principal,
    site_id: &str,
    child_id: &str,
) -> AppResult<Vec<Candidate>> {
    policy::review_duplicates(who, Some(site_id))?;
    // The pairs naming the child on either side, each side by its own
    // index (the site and status checked here: with them in SQL, SQLite
    // walked the site's open pairs by score instead, reading every one,
    // a case page 10 → 107 ms at 25,000 open pairs; migration 000035),
    // then the most likely first.
    let side = |conn: &mut DbConnection, other: bool| -> AppResult<Vec<CandidateRow>> {
        let query = duplicate_candidates::table.select(CandidateRow::as_select());
        Ok(if other {
            query
                .filter(duplicate_candidates::other_child_id.eq(child_id))
                .load(conn)?
        } else {
            query
                .filter(duplicate_candidates::child_id.eq(child_id))
                .load(conn)?
        })
    };
    let mut rows = side(conn, false)?;
    rows.extend(side(conn, true)?);
    rows.retain(|r| r.site_id == site_id && r.status == OPEN);
    rows.sort_by_key(|r| (-r.score, r.created_at));
    rows.truncate(CANDIDATES_SHOWN);
    rows.into_iter().map(|row| candidate(conn, row)).collect()
}

/// The most possible duplicates a child's case shows.
const CANDIDATES_SHOWN: usize = 50;

fn open_candidate(conn: &mut DbConnection, who: &Principal, id: &str) -> AppResult<CandidateRow> {
    policy::review_duplicates(who, None)?;
    let row: CandidateRow = duplicate_candidates::table
        .find(id)
        .select(CandidateRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound("no such possible duplicate".into()))?;
    policy::review_duplicates(who, Some(&row.site_id))?;
    if row.status != OPEN {
        return Err(AppError::Conflict(format!(
            "this pair was already {}",
            row.status
        )));
    }
    Ok(row)
}

fn decide(conn: &mut DbConnection, who: &Principal, id: &str, status: &str) -> AppResult<()> {
    diesel::update(duplicate_candidates::table.find(id))
        .set((
            duplicate_candidates::status.eq(status),
            duplicate_candidates::decided_by.eq(&who.user_id),
            duplicate_candidates::decided_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Not the same child: the pair leaves the list for good.
pub fn dismiss(conn: &mut DbConnection, who: &Principal, id: &str) -> AppResult<Candidate> {
    let row = open_candidate(conn, who, id)?;
    decide(conn, who, &row.id, DISMISSED)?;
    let row = duplicate_candidates::table
        .find(id)
        .select(CandidateRow::as_select())
        .first(conn)?;
    candidate(conn, row)
}

/// The same child: the later child's cases join the earlier child. Its
/// case is a readmission when the earlier child's cases are all closed
/// (KZ numbers it `root.N`); when one is still open, the later case's
/// events move into that open case (a further referral, not a readmission)
/// and the later case is marked merged.
pub fn link(conn: &mut DbConnection, who: &Principal, id: &str) -> AppResult<Candidate> {
    let row = open_candidate(conn, who, id)?;
    let earlier = row.other_child_id.clone();
    let later_cases: Vec<Case> = cases::table
        .filter(cases::child_id.eq(&row.child_id))
        .filter(cases::merged_into.is_null())
        .order(cases::created_at)
        .select(Case::as_select())
        .load(conn)?;
    let open_case: Option<Case> = cases::table
        .filter(cases::child_id.eq(&earlier))
        .filter(cases::closed_at.is_null())
        .filter(cases::merged_into.is_null())
        .select(Case::as_select())
        .first(conn)
        .optional()?;
    for case in later_cases {
        match &open_case {
            Some(target) => merge_into(conn, &case, target)?,
            None => readmit(conn, &case, &earlier)?,
        }
    }
    decide(conn, who, &row.id, LINKED)?;
    // Pairs that named the later child are settled by this link too.
    diesel::update(
        duplicate_candidates::table
            .filter(duplicate_candidates::status.eq(OPEN))
            .filter(
                duplicate_candidates::child_id
                    .eq(&row.child_id)
                    .or(duplicate_candidates::other_child_id.eq(&row.child_id)),
            ),
    )
    .set((
        duplicate_candidates::status.eq(LINKED),
        duplicate_candidates::decided_by.eq(&who.user_id),
        duplicate_candidates::decided_at.eq(now()),
    ))
    .execute(conn)?;
    let row = duplicate_candidates::table
        .find(id)
        .select(CandidateRow::as_select())
        .first(conn)?;
    candidate(conn, row)
}

/// `case` becomes the next admission of child `earlier`.
fn readmit(conn: &mut DbConnection, case: &Case, earlier: &str) -> AppResult<()> {
    let (root, admissions): (Option<String>, i32) = children::table
        .find(earlier)
        .select((children::root_number, children::admissions))
        .first(conn)?;
    let programme = programme_of(&case.programme)?;
    let number = match (programme.case_number, root) {
        // BT: "the code must not change on transfer or re-opening" (§3.1).
        (NumberScheme::KzSiteSequence, Some(root)) => Some(numbers::kz_number(&root, admissions)),
        _ => case.number.clone(),
    };
    diesel::update(children::table.find(earlier))
        .set(children::admissions.eq(admissions + 1))
        .execute(conn)?;
    diesel::update(cases::table.find(&case.id))
        .set((
            cases::child_id.eq(earlier),
            cases::admission.eq(admissions),
            cases::number.eq(&number),
        ))
        .execute(conn)?;
    // The submissions' copy of the number (exports read it).
    crate::submissions::renumber_case(conn, &case.id, number.as_deref())?;
    super::touch(conn, case)?;
    Ok(())
}

/// Moves the events of `case` into the open case `target` and marks `case`
/// merged: one child, one open admission.
fn merge_into(conn: &mut DbConnection, case: &Case, target: &Case) -> AppResult<()> {
    let moved = case_events::table
        .filter(case_events::case_id.eq(&case.id))
        .count()
        .get_result::<i64>(conn)?;
    let target_version: i64 = cases::table
        .find(&target.id)
        .select(cases::version)
        .first(conn)?;
    // Its assignment belonged to the merged case, not to the open one.
    diesel::update(
        case_events::table
            .filter(case_events::case_id.eq(&case.id))
            .filter(case_events::name.eq(crate::programmes::CASE_ASSIGNED)),
    )
    .set(case_events::superseded.eq(true))
    .execute(conn)?;
    // Appended after the target's own events, in their arrival order.
    diesel::update(case_events::table.filter(case_events::case_id.eq(&case.id)))
        .set((
            case_events::case_id.eq(&target.id),
            case_events::seq.eq(case_events::seq + target_version),
        ))
        .execute(conn)?;
    crate::submissions::relink_case(
        conn,
        &case.id,
        &target.id,
        &target.site_id,
        target.number.as_deref(),
    )?;
    diesel::update(cases::table.find(&target.id))
        .set(cases::version.eq(cases::version + moved))
        .execute(conn)?;
    diesel::delete(case_deadlines::table.filter(case_deadlines::case_id.eq(&case.id)))
        .execute(conn)?;
    diesel::update(cases::table.find(&case.id))
        .set((
            cases::merged_into.eq(&target.id),
            cases::closed_at.eq(Some(now())),
            cases::next_due_at.eq(None::<chrono::NaiveDateTime>),
            cases::child_id.eq(&target.child_id),
        ))
        .execute(conn)?;
    super::touch(conn, case)?;
    let target = super::find(conn, &target.id)?
        .ok_or_else(|| AppError::NotFound("the open case is gone".into()))?;
    let programme = programme_of(&target.programme)?;
    let calendar = holidays::calendar(conn, &programme)?;
    timeline::refold(conn, &programme, &calendar, &target)?;
    super::touch(conn, &target)?;
    Ok(())
}

/// Siblings are separate cases (kz-manual §3.5 F2) of children in one
/// family group. Joins the children of cases `a` and `b` (and any group
/// either was already in); returns the group id.
pub fn link_siblings(conn: &mut DbConnection, a: &Case, b: &Case) -> AppResult<String> {
    let (Some(child_a), Some(child_b)) = (&a.child_id, &b.child_id) else {
        return Err(AppError::Conflict("a case without a child record".into()));
    };
    if child_a == child_b {
        return Err(AppError::invalid_field(
            "/case_id",
            "is a case of the same child, not a sibling",
        ));
    }
    let group_of = |conn: &mut DbConnection, child: &str| -> AppResult<Option<String>> {
        Ok(children::table
            .find(child)
            .select(children::family_group_id)
            .first(conn)?)
    };
    let (group_a, group_b) = (group_of(conn, child_a)?, group_of(conn, child_b)?);
    let group = group_a
        .clone()
        .or(group_b.clone())
        .unwrap_or_else(crate::ids::new_row_id);
    for old in [group_a, group_b].into_iter().flatten() {
        diesel::update(children::table.filter(children::family_group_id.eq(old)))
            .set(children::family_group_id.eq(&group))
            .execute(conn)?;
    }
    diesel::update(children::table.filter(children::id.eq_any([child_a, child_b])))
        .set(children::family_group_id.eq(&group))
        .execute(conn)?;
    Ok(group)
}

/// The cases of the other children in the family group of `child_id`.
pub fn siblings(
    conn: &mut DbConnection,
    child_id: &str,
) -> AppResult<(Option<String>, Vec<CaseRef>)> {
    let group: Option<String> = children::table
        .find(child_id)
        .select(children::family_group_id)
        .first(conn)
        .optional()?
        .flatten();
    let Some(group) = group else {
        return Ok((None, Vec::new()));
    };
    let others: Vec<String> = children::table
        .filter(children::family_group_id.eq(&group))
        .filter(children::id.ne(child_id))
        .select(children::id)
        .load(conn)?;
    let mut cases = Vec::new();
    for other in others {
        cases.extend(child_cases(conn, &other)?.cases);
    }
    Ok((Some(group), cases))
}

/// The child of a case as staff who may read the case see them: the name
/// as the newest form that gives one wrote it, the date of birth and sex
/// the server holds, and the age today.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub name: Option<String>,
    pub date_of_birth: Option<String>,
    pub age: Option<i32>,
    pub sex: Option<String>,
}

/// `case`'s child, for a reader the caller already checked may read it.
pub fn shown(conn: &mut DbConnection, case: &Case) -> AppResult<Option<Shown>> {
    use crate::db::schema::submissions;
    let Some(child_id) = &case.child_id else {
        return Ok(None);
    };
    let (date_of_birth, sex): (Option<String>, Option<String>) = children::table
        .find(child_id)
        .select((children::date_of_birth, children::sex))
        .first(conn)?;
    // Newest first: a later form may correct the spelling.
    let payloads: Vec<String> = submissions::table
        .filter(submissions::case_id.eq(&case.id))
        .filter(submissions::superseded_by.is_null())
        .order(submissions::received_at.desc())
        .select(submissions::payload)
        .load(conn)?;
    let name = payloads.iter().find_map(|payload| {
        let envelope: Value = serde_json::from_str(payload).ok()?;
        envelope
            .pointer(&format!("/data{CHILD_NAME}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let age = date_of_birth
        .as_deref()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .and_then(|born| crate::time::age_in_years(born, now().date()));
    Ok(Some(Shown {
        name,
        date_of_birth,
        age,
        sex,
    }))
}
