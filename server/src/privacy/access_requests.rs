//! A child's, parent's or legal representative's request for the child's
//! case file (KZ 10.5, A2/A3): recorded by those who work on the case,
//! reviewed by the Manager (a coordinator of the case's site), who approves
//! it with redactions or refuses it, and, once approved, produced as a
//! redacted copy on demand. Also the family's copy of meeting minutes
//! (8.7.22(d), P8). Owns the `access_requests` table.
//!
//! Copies are built when asked for and never stored; the caller audits each
//! production. Meeting minutes lose their professional-discussion section
//! (the fields the form marks `x-professional-discussion`) in every copy.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{policy, Principal};
use crate::cases::reconcile::programme_of;
use crate::cases::{find, views, Case};
use crate::db::schema::{access_requests, submissions};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, FieldError};
use crate::forms::model::Field;
use crate::forms::FormCache;

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const REFUSED: &str = "refused";

/// What replaces a redacted value in a copy.
pub const REDACTED: &str = "[redacted]";

const REQUESTERS: [&str; 3] = ["child", "parent", "legal_representative"];

/// The shortest best-interests reasoning accepted: a later reader must be
/// able to tell why access was given or refused.
const MIN_REASONING: usize = 20;

/// Who may ask for a copy of a case file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Requester {
    Child,
    Parent,
    LegalRepresentative,
}

/// `POST /cases/{id}/access-requests`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// `child`, `parent` or `legal_representative`.
    #[schema(value_type = Requester)]
    pub requester: String,
    /// The day the request was made to the centre.
    pub received_on: NaiveDate,
}

/// One value withheld from a copy: a field (by JSON pointer into its data)
/// of one of the case's submissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    pub instance_id: String,
    pub pointer: String,
    pub reason: String,
}

/// What a review decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    Approved,
    Refused,
}

/// `POST /access-requests/{id}/review`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// `approved` or `refused`.
    #[schema(value_type = ReviewDecision)]
    pub decision: String,
    pub best_interests_reasoning: Option<String>,
    #[serde(default)]
    pub redactions: Vec<Redaction>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessRequest {
    pub id: String,
    pub case_id: String,
    pub case_number: Option<String>,
    pub requester: String,
    pub received_on: NaiveDate,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    pub status: String,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub best_interests_reasoning: Option<String>,
    pub redactions: Vec<Redaction>,
    /// When a copy was last produced.
    pub copy_produced_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = access_requests)]
struct Row {
    id: String,
    case_id: String,
    requester: String,
    received_on: NaiveDate,
    recorded_by: String,
    recorded_at: NaiveDateTime,
    status: String,
    reviewed_by: Option<String>,
    reviewed_at: Option<NaiveDateTime>,
    best_interests_reasoning: Option<String>,
    redactions: String,
    copy_produced_at: Option<NaiveDateTime>,
}

impl Row {
    fn view(self, case: &Case) -> AppResult<AccessRequest> {
        Ok(AccessRequest {
            redactions: serde_json::from_str(&self.redactions).map_err(AppError::internal)?,
            id: self.id,
            case_id: self.case_id,
            case_number: case.number.clone(),
            requester: self.requester,
            received_on: self.received_on,
            recorded_by: self.recorded_by,
            recorded_at: self.recorded_at.and_utc(),
            status: self.status,
            reviewed_by: self.reviewed_by,
            reviewed_at: self.reviewed_at.map(|t| t.and_utc()),
            best_interests_reasoning: self.best_interests_reasoning,
            copy_produced_at: self.copy_produced_at.map(|t| t.and_utc()),
        })
    }
}

fn case_of(conn: &mut DbConnection, case_id: &str) -> AppResult<Case> {
    find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))
}

/// The request `id` and its case.
fn load(conn: &mut DbConnection, id: &str) -> AppResult<(Row, Case)> {
    let row: Row = access_requests::table
        .find(id)
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound("no such access request".into()))?;
    let case = case_of(conn, &row.case_id)?;
    Ok((row, case))
}

/// Records a request for the file of case `case_id`, pending review.
pub fn record(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    new: &NewRequest,
    now: DateTime<Utc>,
) -> AppResult<AccessRequest> {
    let case = case_of(conn, case_id)?;
    policy::handle_access_request(who, case.scope())?;
    let mut errors = Vec::new();
    if !REQUESTERS.contains(&new.requester.as_str()) {
        errors.push(FieldError::new(
            "/requester",
            "must be child, parent or legal_representative",
        ));
    }
    // A day's grace: the centre's local date may be ahead of UTC.
    if new.received_on > (now + chrono::Duration::days(1)).date_naive() {
        errors.push(FieldError::new("/received_on", "is in the future"));
    }
    fail_on(errors)?;
    let row = Row {
        id: crate::ids::new_row_id(),
        case_id: case.id.clone(),
        requester: new.requester.clone(),
        received_on: new.received_on,
        recorded_by: who.user_id.clone(),
        recorded_at: now.naive_utc(),
        status: PENDING.into(),
        reviewed_by: None,
        reviewed_at: None,
        best_interests_reasoning: None,
        redactions: "[]".into(),
        copy_produced_at: None,
    };
    diesel::insert_into(access_requests::table)
        .values(&row)
        .execute(conn)?;
    row.view(&case)
}

/// The requests for `case`'s file, oldest first. The caller checks that
/// the reader may read the case.
pub fn list(conn: &mut DbConnection, case: &Case) -> AppResult<Vec<AccessRequest>> {
    let rows: Vec<Row> = access_requests::table
        .filter(access_requests::case_id.eq(&case.id))
        .order((access_requests::recorded_at, access_requests::id))
        .select(Row::as_select())
        .load(conn)?;
    rows.into_iter().map(|r| r.view(case)).collect()
}

fn fail_on(errors: Vec<FieldError>) -> AppResult<()> {
    if errors.is_empty() {
        return Ok(());
    }
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.pointer, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(AppError::Validation { detail, errors })
}

/// The data of the current (not superseded) submission `instance_id` of
/// case `case_id`, if it is one.
fn current_data(
    conn: &mut DbConnection,
    case_id: &str,
    instance_id: &str,
) -> AppResult<Option<Value>> {
    let payload: Option<String> = submissions::table
        .find(instance_id)
        .filter(submissions::case_id.eq(case_id))
        .filter(submissions::superseded_by.is_null())
        .select(submissions::payload)
        .first(conn)
        .optional()?;
    payload.map(|p| data_of(&p)).transpose()
}

/// The form data of a stored envelope.
fn data_of(payload: &str) -> AppResult<Value> {
    let mut envelope: Value = serde_json::from_str(payload).map_err(AppError::internal)?;
    Ok(envelope
        .get_mut("data")
        .map(Value::take)
        .unwrap_or(Value::Null))
}

/// The Manager's decision on a pending request. Approving a parent's or
/// legal representative's request, and any refusal, needs the
/// best-interests reasoning (A3); each redaction must name a value that
/// exists in a current submission of the case.
pub fn review(
    conn: &mut DbConnection,
    who: &Principal,
    id: &str,
    review: &Review,
    now: DateTime<Utc>,
) -> AppResult<AccessRequest> {
    let (row, case) = load(conn, id)?;
    policy::review_access_request(who, case.scope())
        .map_err(|e| e.hidden_as("no such access request"))?;
    if row.status != PENDING {
        return Err(AppError::Conflict(format!(
            "this request was already {}",
            row.status
        )));
    }
    let mut errors = Vec::new();
    let approve = match review.decision.as_str() {
        APPROVED => Some(true),
        REFUSED => Some(false),
        _ => {
            errors.push(FieldError::new("/decision", "must be approved or refused"));
            None
        }
    };
    let reasoning = review
        .best_interests_reasoning
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let needs_reasoning = approve == Some(false) || row.requester != "child";
    if needs_reasoning && reasoning.is_none_or(|r| r.chars().count() < MIN_REASONING) {
        let why = if approve == Some(false) {
            "a refusal"
        } else {
            "access by a parent or legal representative (KZ 10.5)"
        };
        errors.push(FieldError::new(
            "/best_interests_reasoning",
            format!(
                "state why {why} is in the child's best interests (at least {MIN_REASONING} characters)"
            ),
        ));
    }
    if approve == Some(false) && !review.redactions.is_empty() {
        errors.push(FieldError::new(
            "/redactions",
            "a refused request gives no copy to redact",
        ));
    }
    for (i, r) in review.redactions.iter().enumerate() {
        if r.reason.trim().is_empty() {
            errors.push(FieldError::new(
                format!("/redactions/{i}/reason"),
                "say why this is withheld",
            ));
        }
        match current_data(conn, &case.id, &r.instance_id)? {
            None => errors.push(FieldError::new(
                format!("/redactions/{i}/instance_id"),
                "not a current submission of this case",
            )),
            Some(data) if data.pointer(&r.pointer).is_none() => errors.push(FieldError::new(
                format!("/redactions/{i}/pointer"),
                "no such value in that submission's data",
            )),
            Some(_) => {}
        }
    }
    fail_on(errors)?;
    let status = if approve == Some(true) {
        APPROVED
    } else {
        REFUSED
    };
    let redactions = serde_json::to_string(&review.redactions).map_err(AppError::internal)?;
    diesel::update(access_requests::table.find(&row.id))
        .set((
            access_requests::status.eq(status),
            access_requests::reviewed_by.eq(&who.user_id),
            access_requests::reviewed_at.eq(now.naive_utc()),
            access_requests::best_interests_reasoning.eq(reasoning),
            access_requests::redactions.eq(&redactions),
        ))
        .execute(conn)?;
    load(conn, id)?.0.view(&case)
}

/// The case file as a child or parent receives it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaseCopy {
    pub access_request_id: String,
    pub requester: String,
    pub produced_at: DateTime<Utc>,
    /// The file as it stood when the request was reviewed: later
    /// submissions were not reviewed, so they need a new request.
    pub as_of: DateTime<Utc>,
    pub case: CopiedCase,
    pub timeline: Vec<CopiedEvent>,
    pub submissions: Vec<CopiedSubmission>,
    /// How many values were replaced, for the audit row.
    #[serde(skip)]
    pub redacted_values: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CopiedCase {
    pub number: Option<String>,
    pub programme: String,
    pub state: String,
    pub state_title: String,
    pub opened_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
}

/// A timeline event without its facts and details: those repeat what the
/// forms say, and a redaction must not leak back through them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CopiedEvent {
    pub name: String,
    pub kind: String,
    pub occurred_at: String,
    pub state_after: Option<String>,
    /// The submission it came from, among `submissions`.
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CopiedSubmission {
    pub instance_id: String,
    pub form_id: String,
    pub form_version: String,
    pub form_title: String,
    pub completed_at: DateTime<Utc>,
    pub data: Value,
    /// Sections left out: the professional discussion of meeting minutes.
    pub withheld_sections: Vec<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = submissions)]
struct SubmissionRow {
    instance_id: String,
    case_id: Option<String>,
    form_id: String,
    form_version: String,
    completed_at: NaiveDateTime,
    superseded_by: Option<String>,
    payload: String,
}

/// Removes the value at a form-model path (`section/field`, repeat groups
/// as `group[]`) wherever it occurs in `data`; whether anything went.
fn remove_path(data: &mut Value, segments: &[&str]) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return false;
    };
    let (key, repeat) = match first.strip_suffix("[]") {
        Some(key) => (key, true),
        None => (*first, false),
    };
    if rest.is_empty() {
        return data
            .as_object_mut()
            .is_some_and(|map| map.shift_remove(key).is_some());
    }
    match (repeat, data.get_mut(key)) {
        (true, Some(Value::Array(items))) => items
            .iter_mut()
            .fold(false, |gone, item| remove_path(item, rest) | gone),
        (false, Some(child)) => remove_path(child, rest),
        _ => false,
    }
}

/// Drops every professional-discussion section (P8) from minutes' `data`;
/// the paths of those that were there.
fn withhold_professional_discussion(fields: &[Field], data: &mut Value) -> Vec<String> {
    fields
        .iter()
        .filter(|f| f.professional_discussion)
        .filter_map(|f| {
            let segments: Vec<&str> = f.segments().collect();
            remove_path(data, &segments).then(|| f.path.trim_end_matches("[]").to_string())
        })
        .collect()
}

/// Produces the redacted copy of an approved request's case file: every
/// approved redaction replaced by `[redacted]`, the professional discussion
/// of minutes left out. Records when; the caller audits it.
pub fn produce_copy(
    conn: &mut DbConnection,
    forms: &FormCache,
    who: &Principal,
    id: &str,
    now: DateTime<Utc>,
) -> AppResult<CaseCopy> {
    let (row, case) = load(conn, id)?;
    policy::handle_access_request(who, case.scope())
        .map_err(|e| e.hidden_as("no such access request"))?;
    let as_of = match (row.status.as_str(), row.reviewed_at) {
        (APPROVED, Some(at)) => at,
        (REFUSED, _) => {
            return Err(AppError::Conflict(
                "this request was refused: there is no copy to give".into(),
            ))
        }
        _ => {
            return Err(AppError::Conflict(
                "this request awaits the Manager's review".into(),
            ))
        }
    };
    let redactions: Vec<Redaction> =
        serde_json::from_str(&row.redactions).map_err(AppError::internal)?;

    // Current as of the review: received by then, and not yet replaced
    // by an edit received by then.
    let rows: Vec<SubmissionRow> = submissions::table
        .filter(submissions::case_id.eq(&case.id))
        .filter(submissions::received_at.le(as_of))
        .order((submissions::completed_at, submissions::instance_id))
        .select(SubmissionRow::as_select())
        .load(conn)?;
    let received: std::collections::HashSet<String> =
        rows.iter().map(|r| r.instance_id.clone()).collect();
    let mut copied = Vec::new();
    let mut redacted_values = 0;
    for r in rows {
        let replaced = r
            .superseded_by
            .as_ref()
            .is_some_and(|by| received.contains(by));
        if replaced {
            continue;
        }
        let mut data = data_of(&r.payload)?;
        for red in redactions.iter().filter(|x| x.instance_id == r.instance_id) {
            if let Some(value) = data.pointer_mut(&red.pointer) {
                *value = Value::String(REDACTED.into());
                redacted_values += 1;
            }
        }
        let form = forms.get(conn, &r.form_id, &r.form_version)?;
        let withheld_sections = withhold_professional_discussion(&form.fields, &mut data);
        copied.push(CopiedSubmission {
            instance_id: r.instance_id,
            form_id: r.form_id,
            form_version: r.form_version,
            form_title: form.meta.title.clone(),
            completed_at: r.completed_at.and_utc(),
            data,
            withheld_sections,
        });
    }

    let timeline = views::timeline(conn, &case, now)?;
    let events = timeline
        .events
        .into_iter()
        .filter(|e| match e.kind.as_str() {
            crate::cases::timeline::SUBMISSION => copied.iter().any(|s| s.instance_id == e.id),
            _ => !e.superseded && e.recorded_at.naive_utc() <= as_of,
        })
        .map(|e| CopiedEvent {
            instance_id: (e.kind == crate::cases::timeline::SUBMISSION).then(|| e.id.clone()),
            name: e.name,
            kind: e.kind,
            occurred_at: e.occurred_at,
            state_after: e.state_after,
        })
        .collect();

    diesel::update(access_requests::table.find(&row.id))
        .set(access_requests::copy_produced_at.eq(now.naive_utc()))
        .execute(conn)?;
    let programme = programme_of(&case.programme)?;
    Ok(CaseCopy {
        access_request_id: row.id,
        requester: row.requester,
        produced_at: now,
        as_of: as_of.and_utc(),
        case: CopiedCase {
            state_title: programme
                .state(&case.state)
                .map(|s| s.title.clone())
                .unwrap_or_default(),
            number: case.number,
            programme: case.programme,
            state: case.state,
            opened_at: case.opened_at.map(|t| t.and_utc()),
            closed_at: case.closed_at.map(|t| t.and_utc()),
        },
        timeline: events,
        submissions: copied,
        redacted_values,
    })
}

/// Meeting minutes as the child, parent or legal representative receives
/// them on request (8.7.22(d)): without the professional discussion.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MinutesCopy {
    pub case_id: String,
    pub case_number: Option<String>,
    #[serde(flatten)]
    pub minutes: CopiedSubmission,
}

/// The family's copy of minutes `instance_id`: those who work on the case
/// may give it; a form with no professional-discussion section is not
/// minutes (404).
pub fn minutes_copy(
    conn: &mut DbConnection,
    forms: &FormCache,
    who: &Principal,
    instance_id: &str,
) -> AppResult<MinutesCopy> {
    let found: Option<SubmissionRow> = submissions::table
        .find(instance_id)
        .select(SubmissionRow::as_select())
        .first(conn)
        .optional()?;
    let Some((r, Some(case_id))) = found.map(|r| {
        let case_id = r.case_id.clone();
        (r, case_id)
    }) else {
        return Err(AppError::NotFound(
            "no minutes of a case with this id".into(),
        ));
    };
    let case = case_of(conn, &case_id)?;
    policy::handle_access_request(who, case.scope())
        .map_err(|e| e.hidden_as("no minutes of a case with this id"))?;
    let form = forms.get(conn, &r.form_id, &r.form_version)?;
    if !form.fields.iter().any(|f| f.professional_discussion) {
        return Err(AppError::NotFound(format!(
            "{} is not meeting minutes: it has no professional-discussion section",
            r.form_id
        )));
    }
    if let Some(by) = &r.superseded_by {
        return Err(AppError::Conflict(format!(
            "an edit replaced these minutes: give the copy of {by}"
        )));
    }
    let mut data = data_of(&r.payload)?;
    let withheld_sections = withhold_professional_discussion(&form.fields, &mut data);
    Ok(MinutesCopy {
        case_id: case.id,
        case_number: case.number,
        minutes: CopiedSubmission {
            instance_id: r.instance_id,
            form_id: r.form_id,
            form_version: r.form_version,
            form_title: form.meta.title.clone(),
            completed_at: r.completed_at.and_utc(),
            data,
            withheld_sections,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(path: &str, professional_discussion: bool) -> Field {
        let mut f = crate::forms::model::fields(&json!({
            "properties": {"x": {"type": "string"}}
        }))
        .remove(0);
        f.path = path.into();
        f.professional_discussion = professional_discussion;
        f
    }

    #[test]
    fn professional_discussion_goes_wherever_it_sits() {
        let fields = [
            field("views", false),
            field("professional_discussion", true),
            field("rounds[]/discussion", true),
        ];
        let mut data = json!({
            "views": {"child_views": "stay at school"},
            "professional_discussion": {"discussion": "charged"},
            "rounds": [{"discussion": "a", "date": "d"}, {"date": "e"}]
        });
        let withheld = withhold_professional_discussion(&fields, &mut data);
        assert_eq!(withheld, ["professional_discussion", "rounds[]/discussion"]);
        assert_eq!(
            data,
            json!({
                "views": {"child_views": "stay at school"},
                "rounds": [{"date": "d"}, {"date": "e"}]
            })
        );
        // Nothing to withhold: nothing listed.
        assert!(withhold_professional_discussion(&fields, &mut data).is_empty());
    }
}
