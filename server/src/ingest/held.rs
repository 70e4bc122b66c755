//! Held forms (#15 item 2): a follow-up that arrives before the form that
//! opens its case is stored (status `pending_case`), decrypted and
//! validated as usual, and held; when the opening form arrives the held
//! forms join the case in the same transaction, or are refused if their
//! sender may not work on it (status `refused`, audited as
//! `access_refused`). Coordinators list refused forms and forms held longer
//! than `pending_case_days`; nothing is dropped. The same list holds ODK
//! forms quarantined for a coordinator (answers their form version refuses,
//! which a phone cannot fix: status `quarantined`, with their problems),
//! which a coordinator reads ([`read`], the problems beside the answers),
//! corrects ([`prepare_correction`], [`accept_correction`]: the corrected
//! answers stored as the form's accepted version by the usual path) or
//! dismisses with a reason ([`dismiss`]).

use std::collections::HashSet;

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    Limits, Opened, Prepared, ReceivedFile, Stored, AWAITING_ATTACHMENTS, COMPLETE, CORRECTED,
    DISMISSED, PENDING_CASE, QUARANTINED, REFUSED,
};
use crate::audit::{self, Event, Origin};
use crate::auth::{users, Principal};
use crate::cases::timeline::SubmissionEvent;
use crate::cases::{self, reconcile};
use crate::db::schema::{attachments, submissions};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, FieldError};
use crate::forms::answers::{self, Line, Shown};
use crate::forms::model::{Field, FieldKind};
use crate::forms::{registry, FormCache};
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
    status: String,
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
    // The status is checked here, not in SQL: `status = ?` beside the
    // partial indexes on status makes SQLite plan the statement again at
    // every run (its plan depends on the bound value), and this runs for
    // every case opened. The rows naming the case are its held forms.
    let rows: Vec<HeldRow> = submissions::table
        .filter(submissions::pending_case_id.eq(case_id))
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
            submissions::status,
        ))
        .load(conn)?;
    let mut refusals = Vec::new();
    for row in rows.into_iter().filter(|r| r.status == PENDING_CASE) {
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

/// A form once held for a coordinator, as its coordinator reads it.
#[derive(Queryable)]
struct QuarantineRow {
    instance_id: String,
    form_id: String,
    form_version: String,
    status: String,
    submitted_by: String,
    payload: String,
    problems: Option<String>,
    kid: String,
    raw_jwe: String,
    superseded_by: Option<String>,
    received_at: NaiveDateTime,
    completed_at: NaiveDateTime,
}

const NOT_QUARANTINED: &str = "no such quarantined form";

/// Submission `instance_id` if `who` coordinates a site of its sender (the
/// coordinators who see it on the held list): the one access rule for
/// reading, correcting and dismissing a quarantined form. Anyone else is
/// told it does not exist (no oracle), and the refusal is audited.
fn quarantined_for(
    conn: &mut DbConnection,
    who: &Principal,
    instance_id: &str,
) -> AppResult<QuarantineRow> {
    let row: QuarantineRow = submissions::table
        .find(instance_id)
        .select((
            submissions::instance_id,
            submissions::form_id,
            submissions::form_version,
            submissions::status,
            submissions::submitted_by,
            submissions::payload,
            submissions::problems,
            submissions::kid,
            submissions::raw_jwe,
            submissions::superseded_by,
            submissions::received_at,
            submissions::completed_at,
        ))
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound(NOT_QUARANTINED.into()))?;
    let sender = users::get(conn, &row.submitted_by)?;
    if !sender.site_ids.iter().any(|s| who.site_ids.contains(s)) {
        return Err(AppError::Hidden(NOT_QUARANTINED.into()));
    }
    Ok(row)
}

/// One answer of a quarantined form with what its form version says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub line: Line,
    /// The problems about this answer (or, on a heading, about its section
    /// as a whole), in the validator's words.
    pub problems: Vec<String>,
}

/// A quarantined form's answers as sent, each with the problems about it.
#[derive(Debug, Clone)]
pub struct HeldReading {
    pub instance_id: String,
    pub form_id: String,
    pub form_version: String,
    pub form_title: String,
    /// The case it names (it joined none).
    pub case_id: Option<String>,
    pub submitted_by: String,
    pub username: String,
    pub received_at: NaiveDateTime,
    pub completed_at: NaiveDateTime,
    /// `quarantined`, `corrected` or `dismissed`.
    pub status: String,
    /// Once corrected: the accepted version's `instance_id`.
    pub corrected_as: Option<String>,
    /// Every problem, as on the held list.
    pub problems: Vec<FieldError>,
    /// Problems about no one answer (the form as a whole, its files).
    pub general: Vec<FieldError>,
    pub answers: Vec<Placed>,
    /// The answers as the phone sent them (the envelope's `data`).
    pub data: Value,
    /// The questions with a problem that the console's correction form
    /// lets a coordinator answer again ([`Editable`]).
    pub editable: Vec<Editable>,
}

/// How the console asks a question again.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text,
    Number,
    YesNo,
    /// One of the form's choices: (the value as JSON, its title).
    Choice(Vec<(String, String)>),
}

/// A question with a problem, as the console's correction form asks it:
/// where its answer goes, what it is called, how it is answered and what
/// the phone sent (as the input's text).
#[derive(Debug, Clone, PartialEq)]
pub struct Editable {
    pub pointer: String,
    pub label: String,
    pub input: Input,
    pub current: String,
    pub problems: Vec<String>,
}

/// The field of the form whose answer is at `pointer` in the data (repeat
/// item indices left out).
fn field_at<'a>(fields: &'a [Field], pointer: &str) -> Option<&'a Field> {
    let path: Vec<String> = pointer
        .split('/')
        .skip(1)
        .filter(|s| s.parse::<usize>().is_err())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    fields.iter().find(|f| {
        f.segments()
            .map(|s| s.trim_end_matches("[]"))
            .eq(path.iter().map(String::as_str))
    })
}

/// The questions with a problem that one input can answer again.
fn editable(fields: &[Field], data: &Value, answers: &[Placed]) -> Vec<Editable> {
    answers
        .iter()
        .filter(|a| !a.problems.is_empty() && a.line.value != Shown::Heading)
        .filter_map(|a| {
            let field = field_at(fields, &a.line.pointer)?;
            let input = match field.kind {
                FieldKind::Text | FieldKind::Date | FieldKind::DateTime
                    if field.options.is_empty() =>
                {
                    Input::Text
                }
                FieldKind::Integer | FieldKind::Number => Input::Number,
                FieldKind::Boolean => Input::YesNo,
                FieldKind::SelectOne | FieldKind::Text if !field.options.is_empty() => {
                    Input::Choice(
                        field
                            .options
                            .iter()
                            .map(|c| {
                                let title = c.title.clone().unwrap_or_else(|| match &c.value {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                });
                                (c.value.to_string(), title)
                            })
                            .collect(),
                    )
                }
                _ => return None,
            };
            let current = match (data.pointer(&a.line.pointer), &input) {
                (None | Some(Value::Null), _) => String::new(),
                (Some(v), Input::Choice(_)) => v.to_string(),
                (Some(Value::Bool(true)), _) => "yes".into(),
                (Some(Value::Bool(false)), _) => "no".into(),
                (Some(Value::String(s)), _) => s.clone(),
                (Some(other), _) => other.to_string(),
            };
            Some(Editable {
                pointer: a.line.pointer.clone(),
                label: a.line.label.clone(),
                input,
                current,
                problems: a.problems.clone(),
            })
        })
        .collect()
}

/// The held form's answers with `typed` (pointer, text as typed into the
/// console's correction form) put in place of its [`Editable`] questions'
/// answers: a blank one removed, each read as its input asks (a number
/// that is not one is kept as typed, for the check to say so).
pub fn with_typed(reading: &HeldReading, typed: &[(String, String)]) -> Value {
    let mut data = reading.data.clone();
    for question in &reading.editable {
        let Some((_, text)) = typed.iter().find(|(p, _)| *p == question.pointer) else {
            continue;
        };
        let text = text.trim();
        let value = match (&question.input, text) {
            (_, "") => None,
            (Input::YesNo, "yes") => Some(Value::Bool(true)),
            (Input::YesNo, "no") => Some(Value::Bool(false)),
            (Input::Number, t) => Some(
                t.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| t.parse::<f64>().map(Value::from))
                    .unwrap_or_else(|_| Value::String(t.to_string())),
            ),
            (Input::Choice(_), t) => {
                Some(serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())))
            }
            (_, t) => Some(Value::String(t.to_string())),
        };
        put(&mut data, &question.pointer, value);
    }
    data
}

/// Sets (or, with `None`, removes) the answer at `pointer`, making the
/// sections on the way.
fn put(data: &mut Value, pointer: &str, value: Option<Value>) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let mut at = data;
    for segment in parent.split('/').skip(1) {
        let key = segment.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Array(items) => match key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(item) => item,
                None => return,
            },
            Value::Object(map) => map.entry(key).or_insert_with(|| Value::Object(Map::new())),
            _ => return,
        };
    }
    if let Value::Object(map) = at {
        match value {
            Some(v) => {
                map.insert(last, v);
            }
            None => {
                map.remove(&last);
            }
        }
    }
}

/// Places each problem (`/data/...` pointers) beside the deepest line it
/// is about; those about no line are returned apart.
fn place(lines: Vec<Line>, problems: &[FieldError]) -> (Vec<Placed>, Vec<FieldError>) {
    let mut placed: Vec<Placed> = lines
        .into_iter()
        .map(|line| Placed {
            line,
            problems: Vec::new(),
        })
        .collect();
    let mut general = Vec::new();
    for problem in problems {
        let at = problem
            .pointer
            .strip_prefix("/data")
            .filter(|p| !p.is_empty());
        let within = |line: &Placed, at: &str| {
            let p = line.line.pointer.as_str();
            at == p || at.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
        };
        let best = at.and_then(|at| {
            placed
                .iter()
                .enumerate()
                .filter(|(_, l)| within(l, at))
                .max_by_key(|(_, l)| l.line.pointer.len())
                .map(|(i, _)| i)
        });
        match best {
            Some(i) => placed[i].problems.push(problem.message.clone()),
            None => general.push(problem.clone()),
        }
    }
    (placed, general)
}

/// Quarantined form `instance_id` (or one corrected or dismissed since) as
/// its coordinator reads it: the answers the phone sent, in form order,
/// each with the problems its form version finds in it. The answers are
/// those kept with the form (`submissions.payload`, as for every stored
/// submission); the caller audits the read.
pub fn read(
    conn: &mut DbConnection,
    forms: &FormCache,
    who: &Principal,
    instance_id: &str,
) -> AppResult<HeldReading> {
    let row = quarantined_for(conn, who, instance_id)?;
    let Some(problems) = &row.problems else {
        return Err(AppError::NotFound(NOT_QUARANTINED.into()));
    };
    let problems: Vec<FieldError> = serde_json::from_str(problems)
        .map_err(|e| AppError::internal(format!("problems of {}: {e}", row.instance_id)))?;
    let mut envelope: Value = serde_json::from_str(&row.payload).map_err(AppError::internal)?;
    let data = envelope["data"].take();
    let form = forms.get(conn, &row.form_id, &row.form_version)?;
    let named: std::collections::HashSet<&str> = problems
        .iter()
        .filter_map(|p| p.pointer.strip_prefix("/data"))
        .collect();
    let lines = answers::labelled_with(&form.fields, &data, &|p| named.contains(p));
    let (answers, general) = place(lines, &problems);
    let editable = editable(&form.fields, &data, &answers);
    let username = users::get(conn, &row.submitted_by)?.username;
    Ok(HeldReading {
        case_id: envelope["case_id"].as_str().map(str::to_string),
        form_title: form.meta.title.clone(),
        instance_id: row.instance_id,
        form_id: row.form_id,
        form_version: row.form_version,
        submitted_by: row.submitted_by,
        username,
        received_at: row.received_at,
        completed_at: row.completed_at,
        corrected_as: row.superseded_by.filter(|_| row.status == CORRECTED),
        status: row.status,
        problems,
        general,
        answers,
        data,
        editable,
    })
}

/// The `instance_id` of the accepted version of quarantined form
/// `held_id`: the same for every correction of it, so that a retry is the
/// same submission, idempotent by `instance_id` like any other.
pub fn corrected_id(held_id: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("casesync: the correction of {held_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A coordinator's corrected answers to a quarantined form, checked as
/// any submission and ready for [`accept_correction`].
#[derive(Debug)]
pub struct Correction {
    pub held_id: String,
    /// The accepted version: the held form's envelope (same form version,
    /// case, times, device, files, `supersedes`) with the corrected answers,
    /// under [`corrected_id`].
    pub prepared: Prepared,
    /// Who sent the form: the accepted version is still theirs.
    pub sender: Principal,
}

/// Checks `data` as the corrected answers of quarantined form
/// `instance_id`, for a coordinator of a site of its sender: exactly as a
/// submission of the same form version from its sender would be checked
/// now (422 with the problems under `/data` when they still do not fit;
/// access to the case judged for the sender). Writes nothing. CPU-heavy:
/// callers run it on the CPU pool.
pub fn prepare_correction(
    conn: &mut DbConnection,
    forms: &FormCache,
    limits: &Limits,
    who: &Principal,
    instance_id: &str,
    data: Value,
) -> AppResult<Correction> {
    let row = quarantined_for(conn, who, instance_id)?;
    match row.status.as_str() {
        // A corrected one again: a retry (the same answers) or a conflict.
        QUARANTINED | CORRECTED => {}
        DISMISSED => {
            return Err(AppError::Conflict(
                "this form was dismissed: it can no longer be corrected".into(),
            ))
        }
        _ => {
            return Err(AppError::Conflict(
                "only a quarantined form (held for a coordinator) can be corrected".into(),
            ))
        }
    }
    if !data.is_object() {
        return Err(AppError::invalid_field(
            "/data",
            "must be an object: the form's answers",
        ));
    }
    let (sender, active) = sender(conn, &row.submitted_by)?;
    if !active {
        return Err(AppError::Conflict(format!(
            "{} who sent this form is deactivated: dismiss it and record the form yourself",
            sender.username
        )));
    }
    let mut envelope: Value = serde_json::from_str(&row.payload).map_err(AppError::internal)?;
    let accepted = corrected_id(&row.instance_id);
    envelope["instance_id"] = Value::String(accepted.to_string());
    envelope["data"] = data;
    // The files the phone sent with it, as they were stored.
    let files: Vec<(String, Option<String>, Option<String>)> = attachments::table
        .filter(attachments::instance_id.eq(&row.instance_id))
        .filter(attachments::received_at.is_not_null())
        .select((attachments::name, attachments::kid, attachments::raw_jwe))
        .load(conn)?;
    let files = files
        .into_iter()
        .filter_map(|(name, kid, raw_jwe)| {
            Some(ReceivedFile {
                name,
                kid: kid?,
                raw_jwe: raw_jwe?,
            })
        })
        .collect();
    // The phone's words for a retired version ("sync to get the current
    // version") mean nothing to the coordinator correcting it.
    if registry::status(conn, &row.form_id, &row.form_version)?.as_deref()
        != Some(registry::PUBLISHED)
    {
        return Err(AppError::Conflict(format!(
            "version {} of this form was retired after the form was held, so it can no longer be corrected: dismiss it and record the form yourself in the current version",
            row.form_version
        )));
    }
    // The held form was checked against its programme's key when it came.
    let key_programme = forms
        .get(conn, &row.form_id, &row.form_version)?
        .meta
        .programme
        .clone();
    let prepared = super::prepare_opened(
        conn,
        forms,
        limits,
        &sender,
        Opened {
            envelope,
            kid: row.kid,
            key_programme,
            // What the phone sent, as kept with the held form.
            raw: row.raw_jwe,
            files,
            quarantine: false,
        },
        &HashSet::new(),
    )
    .map_err(|err| sender_refused(err, &sender))?;
    Ok(Correction {
        held_id: row.instance_id,
        prepared,
        sender,
    })
}

/// A refusal of the sender's access, in words for the coordinator.
fn sender_refused(err: AppError, sender: &Principal) -> AppError {
    match err {
        AppError::Forbidden(_) => AppError::Conflict(format!(
            "{} who sent this form may no longer submit forms for its case: assign the case to them, or dismiss this form and record it yourself",
            sender.username
        )),
        other => other,
    }
}

/// Stores a checked [`Correction`] as the held form's accepted version,
/// through the path every submission takes ([`super::store_unaudited`]:
/// the case opened or updated, the timeline, deadlines, an edit's
/// `supersedes`), marks the held form `corrected` (kept as the phone sent
/// it, `superseded_by` the accepted version) and audits it as
/// `quarantined_form_corrected` with `who` as the actor. Call in a write
/// transaction. The same correction again is a retry: nothing changes.
pub fn accept_correction(
    conn: &mut DbConnection,
    who: &Principal,
    origin: &Origin,
    correction: &Correction,
) -> AppResult<Stored> {
    let Correction {
        held_id,
        prepared,
        sender,
    } = correction;
    // Judged again in the transaction: a dismissal may have come first.
    let status: String = submissions::table
        .find(held_id)
        .select(submissions::status)
        .first(conn)?;
    if status == DISMISSED {
        return Err(AppError::Conflict(
            "this form was dismissed: it can no longer be corrected".into(),
        ));
    }
    let stored = match super::store_unaudited(conn, sender, prepared) {
        Err(AppError::Conflict(_)) if status == CORRECTED => {
            return Err(AppError::Conflict(
                "this form was already corrected with other answers; correct the case with a new form instead".into(),
            ))
        }
        stored => stored.map_err(|err| sender_refused(err, sender))?,
    };
    let Stored::Created(receipt) = &stored else {
        return Ok(stored);
    };
    diesel::update(
        submissions::table
            .find(held_id)
            .filter(submissions::status.eq(QUARANTINED)),
    )
    .set((
        submissions::status.eq(CORRECTED),
        submissions::superseded_by.eq(&receipt.instance_id),
    ))
    .execute(conn)?;
    let detail = format!(
        "accepted as {} ({} {}), sent by {}",
        receipt.instance_id,
        prepared.envelope.form_id,
        prepared.envelope.form_version,
        sender.username
    );
    audit::record(
        conn,
        origin,
        Event::new(Some(who), "quarantined_form_corrected")
            .object("submission", held_id)
            .detail(&detail),
    )?;
    audit_refusals(conn, origin, &receipt.refused_held)?;
    Ok(stored)
}

/// Dismisses a quarantined form (a coordinator has dealt with it, e.g.
/// the worker sent a corrected one): it leaves the held list, is kept, and
/// a resend of it is still a retry. Only a coordinator of a site of its
/// sender; a form that is not quarantined is 409. The caller audits it,
/// with the reason, in the same transaction.
pub fn dismiss(conn: &mut DbConnection, who: &Principal, instance_id: &str) -> AppResult<()> {
    let status = quarantined_for(conn, who, instance_id)?.status;
    if status == DISMISSED {
        return Err(AppError::Conflict("this form was already dismissed".into()));
    }
    if status == CORRECTED {
        return Err(AppError::Conflict(
            "this form was corrected and accepted: it is in its case".into(),
        ));
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
