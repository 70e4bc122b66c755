//! Consent records: one signatory's consent or assent to some uses of a
//! case's data (KZ 10.4 and §3.6; BT D-01…D-03 and §7.3). Consent is not
//! static: records are dated, never deleted, and a withdrawal is honoured
//! from the moment it is recorded. Whether the records of a case are enough
//! for a disclosure depends on the child's age, by the programme's rules.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{policy, Principal};
use crate::cases::{self, views, Case};
use crate::db::schema::{consents, submissions};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, FieldError};
use crate::time::age_in_years;

crate::ids::string_id! {
    /// A consent record.
    ConsentId
}

/// Who signs (or assents).
pub const SUBJECTS: [&str; 6] = [
    "child",
    "parent",
    "legal_representative",
    "caregiver",
    "trusted_adult",
    "case_manager",
];
pub const KINDS: [&str; 2] = ["consent", "assent"];
/// KZ 10.4: marks, thumbprints or oral recordings stand for writing where
/// a sensory impairment or disability prevents it. BT §7.3: oral assent
/// for children of 6 to 11.
pub const MEDIA: [&str; 5] = ["written", "mark", "thumbprint", "recording", "oral"];
/// BT D-01/D-02 items 1–3 and D-03; KZ 10.4 (`disclose`, to a named
/// recipient).
pub const SCOPES: [&str; 5] = [
    "participate",
    "collect_store",
    "aggregate",
    "share_providers",
    "disclose",
];
fn subjects_schema() -> utoipa::openapi::Object {
    crate::ids::one_of(&SUBJECTS)
}

fn kinds_schema() -> utoipa::openapi::Object {
    crate::ids::one_of(&KINDS)
}

fn media_schema() -> utoipa::openapi::Object {
    crate::ids::one_of(&MEDIA)
}

fn scopes_schema() -> utoipa::openapi::schema::Array {
    crate::ids::many_of(&SCOPES)
}

/// The scopes that let identifying data leave the service.
const SHARING: [&str; 2] = ["disclose", "share_providers"];

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    #[schema(schema_with = subjects_schema)]
    pub subject: String,
    #[schema(schema_with = kinds_schema)]
    pub kind: String,
    #[schema(schema_with = media_schema)]
    pub medium: String,
    #[schema(schema_with = scopes_schema)]
    pub scopes: Vec<String>,
    pub given_on: NaiveDate,
    /// To whom, for a disclosure by consent (KZ P6: "to whom, what, why").
    pub recipient: Option<String>,
    /// The signed form on file (BT D-01…D-03), a submission of this case.
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    pub reason: String,
    /// When the signatory withdrew, if before it was recorded (not after).
    pub withdrawn_on: Option<NaiveDate>,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = consents)]
pub struct ConsentRow {
    pub id: String,
    pub case_id: String,
    pub subject: String,
    pub kind: String,
    pub medium: String,
    pub scopes: String,
    pub recipient: Option<String>,
    pub given_on: NaiveDate,
    pub instance_id: Option<String>,
    pub recorded_by: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub recorded_at: NaiveDateTime,
    pub withdrawn_on: Option<NaiveDate>,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub withdrawn_at: Option<NaiveDateTime>,
    pub withdrawn_by: Option<String>,
    pub withdrawal_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    pub id: String,
    pub case_id: String,
    pub subject: String,
    pub kind: String,
    pub medium: String,
    pub scopes: Vec<String>,
    pub recipient: Option<String>,
    pub given_on: NaiveDate,
    pub instance_id: Option<String>,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    pub withdrawn: bool,
    pub withdrawn_on: Option<NaiveDate>,
    pub withdrawal_reason: Option<String>,
}

impl From<ConsentRow> for ConsentView {
    fn from(r: ConsentRow) -> Self {
        ConsentView {
            scopes: r.scopes.split_whitespace().map(String::from).collect(),
            withdrawn: r.withdrawn_at.is_some(),
            id: r.id,
            case_id: r.case_id,
            subject: r.subject,
            kind: r.kind,
            medium: r.medium,
            recipient: r.recipient,
            given_on: r.given_on,
            instance_id: r.instance_id,
            recorded_by: r.recorded_by,
            recorded_at: r.recorded_at.and_utc(),
            withdrawn_on: r.withdrawn_on,
            withdrawal_reason: r.withdrawal_reason,
        }
    }
}

fn one_of(pointer: &str, value: &str, allowed: &[&str]) -> Option<FieldError> {
    (!allowed.contains(&value))
        .then(|| FieldError::new(pointer, format!("must be one of {}", allowed.join(", "))))
}

fn case_of(conn: &mut DbConnection, id: &str) -> AppResult<Case> {
    cases::find(conn, id)?.ok_or_else(|| AppError::NotFound("no such case".into()))
}

/// Records a consent given for case `case_id` (the assigned worker or a
/// coordinator of the case's site, who hold the signed form).
pub fn record(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    new: &NewConsent,
    now: DateTime<Utc>,
) -> AppResult<ConsentView> {
    let case = case_of(conn, case_id)?;
    policy::work_on_case(who, case.scope())?;
    let mut errors: Vec<FieldError> = [
        one_of("/subject", &new.subject, &SUBJECTS),
        one_of("/kind", &new.kind, &KINDS),
        one_of("/medium", &new.medium, &MEDIA),
    ]
    .into_iter()
    .flatten()
    .collect();
    if new.scopes.is_empty() {
        errors.push(FieldError::new("/scopes", "name at least one use"));
    }
    for (i, scope) in new.scopes.iter().enumerate() {
        errors.extend(one_of(&format!("/scopes/{i}"), scope, &SCOPES));
    }
    if new.given_on > now.date_naive() {
        errors.push(FieldError::new("/given_on", "is in the future"));
    }
    if let Some(instance) = &new.instance_id {
        let of_case: Option<Option<String>> = submissions::table
            .find(instance)
            .select(submissions::case_id)
            .first(conn)
            .optional()?;
        if of_case.flatten().as_deref() != Some(case.id.as_str()) {
            errors.push(FieldError::new(
                "/instance_id",
                "is not a submission of this case",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation {
            detail: "the consent record is not valid".into(),
            errors,
        });
    }
    let row = ConsentRow {
        id: crate::ids::new_row_id(),
        case_id: case.id,
        subject: new.subject.clone(),
        kind: new.kind.clone(),
        medium: new.medium.clone(),
        scopes: new.scopes.join(" "),
        recipient: new
            .recipient
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(String::from),
        given_on: new.given_on,
        instance_id: new.instance_id.clone(),
        recorded_by: who.user_id.clone(),
        recorded_at: now.naive_utc(),
        withdrawn_on: None,
        withdrawn_at: None,
        withdrawn_by: None,
        withdrawal_reason: None,
    };
    insert(conn, &row)?;
    Ok(row.into())
}

/// Stores a new consent record.
pub(super) fn insert(conn: &mut DbConnection, row: &ConsentRow) -> AppResult<()> {
    diesel::insert_into(consents::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The consents of a case, oldest first, for those who may read it.
pub fn list(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    now: DateTime<Utc>,
) -> AppResult<Vec<ConsentView>> {
    let (case, _) = views::readable(conn, who, case_id, now)?;
    Ok(of_case(conn, &case.id)?
        .into_iter()
        .map(ConsentView::from)
        .collect())
}

fn of_case(conn: &mut DbConnection, case_id: &str) -> AppResult<Vec<ConsentRow>> {
    Ok(consents::table
        .filter(consents::case_id.eq(case_id))
        .order((consents::given_on, consents::recorded_at))
        .select(ConsentRow::as_select())
        .load(conn)?)
}

/// Withdraws consent `id`: from now on it counts for nothing.
pub fn withdraw(
    conn: &mut DbConnection,
    who: &Principal,
    id: &str,
    w: &Withdrawal,
    now: DateTime<Utc>,
) -> AppResult<ConsentView> {
    let row: ConsentRow = consents::table
        .find(id)
        .select(ConsentRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound("no such consent".into()))?;
    let case = case_of(conn, &row.case_id)?;
    policy::work_on_case(who, case.scope()).map_err(|e| e.hidden_as("no such consent"))?;
    if row.withdrawn_at.is_some() {
        return Err(AppError::Conflict(
            "this consent is already withdrawn".into(),
        ));
    }
    if w.reason.trim().is_empty() {
        return Err(AppError::invalid_field(
            "/reason",
            "say why, or who withdrew",
        ));
    }
    let on = w.withdrawn_on.unwrap_or(now.date_naive());
    if on > now.date_naive() || on < row.given_on {
        return Err(AppError::invalid_field(
            "/withdrawn_on",
            "must be between the day consent was given and today",
        ));
    }
    diesel::update(consents::table.find(id))
        .set((
            consents::withdrawn_on.eq(on),
            consents::withdrawn_at.eq(now.naive_utc()),
            consents::withdrawn_by.eq(&who.user_id),
            consents::withdrawal_reason.eq(w.reason.trim()),
        ))
        .execute(conn)?;
    Ok(ConsentView {
        withdrawn: true,
        withdrawn_on: Some(on),
        withdrawal_reason: Some(w.reason.trim().to_string()),
        ..row.into()
    })
}

/// One signature a disclosure by consent needs: any of `subjects`, of
/// `kind`, in writing (or its KZ 10.4 equivalents) unless `oral_ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub subjects: &'static [&'static str],
    pub kind: &'static str,
    pub oral_ok: bool,
}

const ADULTS_KZ: &[&str] = &["parent", "legal_representative"];
/// BT §7.3: the caregiver, or, with none or none in the child's interest,
/// another trusted adult or the case manager.
const ADULTS_BT: &[&str] = &[
    "parent",
    "legal_representative",
    "caregiver",
    "trusted_adult",
    "case_manager",
];
const CHILD: &[&str] = &["child"];

/// What a disclosure by consent needs for a child of `age` (None: unknown,
/// so the strictest band applies).
pub fn needs(programme: &str, age: Option<i32>) -> Vec<Need> {
    let adult = |subjects| Need {
        subjects,
        kind: "consent",
        oral_ok: false,
    };
    match programme {
        // KZ 10.4 / §3.6: the child from 16; under 16 the parent or legal
        // representative (the child too where sufficiently mature, which
        // the manual leaves to a per-decision assessment).
        "kz" => match age {
            Some(a) if a >= 16 => vec![adult(CHILD)],
            Some(_) => vec![adult(ADULTS_KZ)],
            None => vec![adult(ADULTS_KZ), adult(CHILD)],
        },
        // BT §7.3 table, by age band.
        _ => match age {
            Some(a) if a >= 15 => vec![adult(CHILD)],
            Some(a) if a >= 12 => vec![
                adult(ADULTS_BT),
                Need {
                    subjects: CHILD,
                    kind: "assent",
                    oral_ok: false,
                },
            ],
            Some(a) if a >= 6 => vec![
                adult(ADULTS_BT),
                Need {
                    subjects: CHILD,
                    kind: "assent",
                    oral_ok: true,
                },
            ],
            Some(_) => vec![adult(ADULTS_BT)],
            None => vec![
                adult(ADULTS_BT),
                Need {
                    subjects: CHILD,
                    kind: "assent",
                    oral_ok: false,
                },
            ],
        },
    }
}

fn meets(row: &ConsentRow, need: &Need) -> bool {
    let written = row.medium != "oral" || need.oral_ok;
    // A consent also serves where an assent is asked.
    let kind = row.kind == need.kind || (need.kind == "assent" && row.kind == "consent");
    need.subjects.contains(&row.subject.as_str()) && kind && written
}

/// The child's age today from the case's facts, if its date of birth is
/// known.
fn age_of(case: &Case, today: NaiveDate) -> Option<i32> {
    let facts: Value = serde_json::from_str(&case.facts).ok()?;
    let born = facts.get("child.date_of_birth")?.as_str()?;
    let born = NaiveDate::parse_from_str(born.get(..10)?, "%Y-%m-%d").ok()?;
    age_in_years(born, today)
}

/// Whether the consents `ids` of `case` allow disclosing its identifying
/// data today: each current (not withdrawn) and for sharing, together
/// meeting the programme's rule for the child's age; and no signatory's
/// latest word on sharing is a withdrawal.
pub fn allow_disclosure(
    conn: &mut DbConnection,
    programme: &str,
    case: &Case,
    ids: &[String],
    today: NaiveDate,
) -> AppResult<()> {
    let refuse = |why: String| AppError::invalid_field("/consent", why);
    if ids.is_empty() {
        return Err(refuse(
            "name the consent records the disclosure rests on".into(),
        ));
    }
    let all = of_case(conn, &case.id)?;
    let mut named = Vec::new();
    for id in ids {
        let row = all
            .iter()
            .find(|r| &r.id == id)
            .ok_or_else(|| refuse(format!("{id} is not a consent of this case")))?;
        if row.withdrawn_at.is_some() {
            return Err(refuse(format!(
                "{id} was withdrawn on {}",
                row.withdrawn_on.unwrap_or(row.given_on)
            )));
        }
        if !row.scopes.split_whitespace().any(|s| SHARING.contains(&s)) {
            return Err(refuse(format!("{id} does not consent to sharing")));
        }
        named.push(row);
    }
    // Someone who withdrew, and has not consented since, has said no.
    for subject in SUBJECTS {
        let latest = all
            .iter()
            .filter(|r| r.subject == subject)
            .filter(|r| r.scopes.split_whitespace().any(|s| SHARING.contains(&s)))
            .max_by_key(|r| (r.given_on, r.recorded_at));
        if latest.is_some_and(|r| r.withdrawn_at.is_some()) {
            return Err(refuse(format!(
                "the {} withdrew consent to sharing",
                subject.replace('_', " ")
            )));
        }
    }
    let age = age_of(case, today);
    for need in needs(programme, age) {
        if !named.iter().any(|r| meets(r, &need)) {
            let band = age.map_or("of unknown age".to_string(), |a| format!("aged {a}"));
            return Err(refuse(format!(
                "for a child {band} the {} of the {} is needed{}",
                need.kind,
                need.subjects.join(" or ").replace('_', " "),
                if need.oral_ok { "" } else { " in writing" }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(subject: &str, kind: &str, medium: &str) -> ConsentRow {
        ConsentRow {
            id: "c".into(),
            case_id: "k".into(),
            subject: subject.into(),
            kind: kind.into(),
            medium: medium.into(),
            scopes: "disclose".into(),
            recipient: None,
            given_on: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            instance_id: None,
            recorded_by: "u".into(),
            recorded_at: NaiveDate::from_ymd_opt(2026, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
            withdrawn_on: None,
            withdrawn_at: None,
            withdrawn_by: None,
            withdrawal_reason: None,
        }
    }

    fn satisfied(programme: &str, age: Option<i32>, rows: &[ConsentRow]) -> bool {
        needs(programme, age)
            .iter()
            .all(|n| rows.iter().any(|r| meets(r, n)))
    }

    #[test]
    fn kz_the_parent_under_16_and_the_child_from_16() {
        let parent = row("parent", "consent", "written");
        let child = row("child", "consent", "written");
        assert!(satisfied("kz", Some(15), std::slice::from_ref(&parent)));
        assert!(!satisfied("kz", Some(15), std::slice::from_ref(&child)));
        assert!(satisfied("kz", Some(16), std::slice::from_ref(&child)));
        assert!(!satisfied("kz", Some(16), std::slice::from_ref(&parent)));
        // A thumbprint stands for a signature (10.4); an oral word does not.
        assert!(satisfied(
            "kz",
            Some(17),
            &[row("child", "consent", "thumbprint")]
        ));
        assert!(!satisfied(
            "kz",
            Some(17),
            &[row("child", "consent", "oral")]
        ));
        // Age unknown: both.
        assert!(!satisfied("kz", None, std::slice::from_ref(&parent)));
        assert!(satisfied("kz", None, &[parent, child]));
    }

    #[test]
    fn bt_by_the_age_bands_of_section_7_3() {
        let caregiver = row("caregiver", "consent", "written");
        let oral_assent = row("child", "assent", "oral");
        let written_assent = row("child", "assent", "written");
        let child = row("child", "consent", "written");
        assert!(satisfied("bt", Some(4), std::slice::from_ref(&caregiver)));
        assert!(!satisfied("bt", Some(8), std::slice::from_ref(&caregiver)));
        assert!(satisfied(
            "bt",
            Some(8),
            &[caregiver.clone(), oral_assent.clone()]
        ));
        assert!(!satisfied(
            "bt",
            Some(13),
            &[caregiver.clone(), oral_assent]
        ));
        assert!(satisfied(
            "bt",
            Some(13),
            &[caregiver.clone(), written_assent]
        ));
        assert!(satisfied("bt", Some(16), std::slice::from_ref(&child)));
        assert!(!satisfied("bt", Some(16), &[caregiver]));
        // With no caregiver fit to sign, the case manager may (§7.3).
        assert!(satisfied(
            "bt",
            Some(3),
            &[row("case_manager", "consent", "written")]
        ));
    }
}
