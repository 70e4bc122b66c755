//! Ingest of encrypted submissions: decrypt → envelope → published form
//! version → may the caller submit for this case → validate → store once →
//! reconcile into the case. `prepare` does everything that needs no write
//! (in parallel, off the writer); `store` is the write, run alone or in a
//! group commit. The pipeline sits above `cases` and `privacy`, which it
//! feeds; the rows it writes are `submissions`' (the envelope, statuses,
//! stored cells).

pub mod attachments;
pub mod committer;
pub mod held;
pub mod odk;

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::audit::{self, Event, Origin};
use crate::auth::{sites, users, Principal};
use crate::cases::children::Identity;
use crate::cases::timeline::SubmissionEvent;
use crate::cases::{self, reconcile};
use crate::crypto::jwe;
use crate::crypto::keys::KeyRing;
use crate::db::schema::submissions;
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult, FieldError};
use crate::forms::columns;
use crate::forms::model::CaseRole;
use crate::forms::{registry, FormCache};
use crate::programmes::Programmes;
use crate::submissions::{self as rows, cells, repeats, NewSubmission};
use crate::submissions::{AttachmentDeclaration, Envelope};
pub use crate::submissions::{
    AWAITING_ATTACHMENTS, COMPLETE, CORRECTED, DISMISSED, PENDING_CASE, QUARANTINED, REFUSED,
};
use crate::time::now;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    pub instance_id: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub received_at: NaiveDateTime,
    pub case_id: Option<String>,
    pub status: String,
    /// Held forms this submission's new case refused (audited with it).
    #[serde(skip)]
    pub refused_held: Vec<held::Refusal>,
}

/// A new submission (201) or a retry of one already stored (200).
#[derive(Debug)]
pub enum Stored {
    Created(Receipt),
    Repeated(Receipt),
}

/// JSON with every object's keys sorted: the same content hashes the same
/// however a phone serialised it.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

fn undecryptable(err: jwe::JweError) -> AppError {
    AppError::bad_request(format!("the submission could not be read: {err}"))
}

fn receipt_of(conn: &mut DbConnection, instance_id: &str) -> AppResult<Option<(String, Receipt)>> {
    type Row = (
        String,
        NaiveDateTime,
        Option<String>,
        Option<String>,
        String,
    );
    let row: Option<Row> = submissions::table
        .find(instance_id)
        .select((
            submissions::content_sha256,
            submissions::received_at,
            submissions::case_id,
            submissions::pending_case_id,
            submissions::status,
        ))
        .first(conn)
        .optional()?;
    Ok(
        row.map(|(sha, received_at, case_id, pending_case_id, status)| {
            (
                sha,
                Receipt {
                    instance_id: instance_id.to_string(),
                    received_at,
                    case_id: case_id.or(pending_case_id),
                    status,
                    refused_held: Vec::new(),
                },
            )
        }),
    )
}

/// A submission that passed every check that needs no write: ready for
/// [`store`].
#[derive(Debug)]
pub struct Prepared {
    instance_id: String,
    envelope: Envelope,
    /// The decrypted envelope as stored.
    payload: String,
    /// Its answers as export records (`submissions::cells`).
    cells: cells::StoredCells,
    /// Its repeat groups for the .zip export (`submissions::repeats`),
    /// when its version has any.
    repeats: Option<repeats::StoredRepeats>,
    content_sha256: String,
    kid: String,
    raw: String,
    /// Attachments that came with it ([`ReceivedFile`]).
    files: Vec<ReceivedFile>,
    programme: String,
    case_role: CaseRole,
    /// What it adds to its case's timeline.
    event: SubmissionEvent,
    /// For a form that opens a case: who the child is.
    identity: Identity,
    /// Answers its form version refuses, from a door whose sender cannot
    /// fix them ([`Opened::quarantine`]): stored as `quarantined`, not
    /// processed.
    problems: Option<Vec<FieldError>>,
}

impl Prepared {
    /// Its submission row as sent by `submitted_by`, about no case yet:
    /// the storing path names the case, the quarantine its problems.
    fn row<'a>(
        &'a self,
        submitted_by: &'a str,
        received_at: NaiveDateTime,
        status: &'a str,
    ) -> NewSubmission<'a> {
        let envelope = &self.envelope;
        NewSubmission {
            instance_id: &self.instance_id,
            form_id: &envelope.form_id,
            form_version: &envelope.form_version,
            case_id: None,
            submitted_by,
            device_id: &envelope.device_id,
            started_at: envelope.started_at.map(|t| t.naive_utc()),
            completed_at: envelope.completed_at.naive_utc(),
            received_at,
            kid: &self.kid,
            raw_jwe: &self.raw,
            payload: &self.payload,
            content_sha256: &self.content_sha256,
            base_case_version: envelope.base_case_version,
            supersedes: None,
            status,
            site_id: None,
            case_number: None,
            pending_case_id: None,
            pending_event: None,
            problems: None,
        }
    }
}

impl Prepared {
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The case this submission opens, if it opens one.
    pub fn opens_case(&self) -> Option<uuid::Uuid> {
        match (self.case_role, &self.problems) {
            (CaseRole::Opens, None) => self.envelope.case_id,
            _ => None,
        }
    }

    /// What its form version refuses in it, when it is to be quarantined.
    pub fn problems(&self) -> Option<&[FieldError]> {
        self.problems.as_deref()
    }
}

/// What storing a submission does to its case.
enum CasePlan {
    Open {
        site: sites::Site,
    },
    Update(cases::Case),
    /// The submission that opened the case, or an edit of it.
    Reopened(cases::Case),
    /// About a case not seen yet, from someone who works at a site of the
    /// form's programme: held until the case opens ([`held`]).
    Hold,
    NoCase,
}

/// Decrypts, reads and checks one JWE from `who`, in the order of the
/// contract: size (413) → decrypt (400) → envelope (400) → published
/// version (422) → access (403) → data (422). Writes nothing. CPU-heavy:
/// callers run it on the CPU pool (`AppState::cpu_db`).
pub fn prepare(
    conn: &mut DbConnection,
    forms: &FormCache,
    keys: &KeyRing,
    limits: &Limits,
    who: &Principal,
    raw: String,
) -> AppResult<Prepared> {
    prepare_after(conn, forms, keys, limits, who, raw, &HashSet::new())
}

/// [`prepare`] for an item of a batch, judged after the items before it
/// as if they had been sent one by one: a form about a case that an
/// earlier item opens (`opened_earlier`) cannot be judged against a case
/// not stored yet, so whether the caller may submit for it is judged when
/// it is stored, after that item ([`store`] checks again, in order). (A
/// form about a case nobody has opened yet is held: [`held`].)
pub fn prepare_after(
    conn: &mut DbConnection,
    forms: &FormCache,
    keys: &KeyRing,
    limits: &Limits,
    who: &Principal,
    raw: String,
    opened_earlier: &HashSet<uuid::Uuid>,
) -> AppResult<Prepared> {
    // 0. Within the size a submission may have, however it came (a batch
    // item as much as a request of its own): nothing larger is decrypted.
    if raw.len() > limits.max_submission_bytes {
        return Err(AppError::PayloadTooLarge {
            limit: limits.max_submission_bytes,
        });
    }

    // 1. Decrypt.
    let parsed = jwe::parse(&raw).map_err(undecryptable)?;
    let (key_programme, private) = keys
        .get(conn, &parsed.kid)?
        .ok_or_else(|| undecryptable(jwe::JweError::UnknownKey))?;
    let plaintext = parsed.decrypt(&private).map_err(undecryptable)?;
    let envelope_value: Value = crate::json::parse_json(&plaintext)?;
    drop(plaintext);
    let kid = parsed.kid;
    prepare_opened(
        conn,
        forms,
        limits,
        who,
        Opened {
            envelope: envelope_value,
            kid,
            key_programme,
            raw,
            files: Vec::new(),
            quarantine: false,
        },
        opened_earlier,
    )
}

/// A submission opened by its door (a JWE, or an ODK Collect upload:
/// [`odk`]): the envelope as JSON, the programme key it was encrypted for,
/// the raw record kept as received, and files that came with it.
pub struct Opened {
    pub envelope: Value,
    pub kid: String,
    pub key_programme: String,
    /// Kept as the submission's raw record (`submissions.raw_jwe`).
    pub raw: String,
    /// Attachments that came with the submission, already encrypted for
    /// the programme key as `PUT …/attachments/{name}` would store them.
    pub files: Vec<ReceivedFile>,
    /// Store answers the form version refuses as `quarantined` instead of
    /// refusing them (422): for ODK Collect, which cannot edit a sent
    /// encrypted form. A JWE's sender can fix it, so it gets the 422.
    pub quarantine: bool,
}

/// An attachment that arrived with its submission (ODK Collect sends the
/// files in the same request).
#[derive(Debug, Clone)]
pub struct ReceivedFile {
    pub name: String,
    pub kid: String,
    pub raw_jwe: String,
}

/// Everything after decryption, the same for every door: envelope (400)
/// → published version (422) → access (403) → data (422). Writes nothing.
pub fn prepare_opened(
    conn: &mut DbConnection,
    forms: &FormCache,
    limits: &Limits,
    who: &Principal,
    opened: Opened,
    opened_earlier: &HashSet<uuid::Uuid>,
) -> AppResult<Prepared> {
    let Opened {
        envelope: mut envelope_value,
        kid,
        key_programme,
        raw,
        files,
        quarantine,
    } = opened;
    // 2. Envelope shape.
    // The envelope's fields are read with an empty `data` in its place: a
    // copy of the data (megabytes, perhaps) is made only once it is valid.
    let data = match envelope_value.get_mut("data") {
        Some(data @ Value::Object(_)) => std::mem::replace(data, Value::Object(Map::new())),
        _ => Value::Null,
    };
    let envelope: Envelope = crate::json::from_value(&envelope_value)?;
    if !data.is_null() {
        envelope_value["data"] = data;
    }
    if envelope.device_id.trim().is_empty() || envelope.device_id.len() > 200 {
        return Err(AppError::bad_request(
            "/device_id: must be 1–200 characters",
        ));
    }
    crate::json::refuse_unsafe_text([
        ("/form_id", envelope.form_id.as_str()),
        ("/form_version", envelope.form_version.as_str()),
        ("/device_id", envelope.device_id.as_str()),
    ])?;
    attachments::check_declarations(&envelope.attachments, limits)?;
    let instance_id = envelope.instance_id.to_string();

    // 3. A published version of a form of the key's programme.
    let status =
        registry::status(conn, &envelope.form_id, &envelope.form_version)?.ok_or_else(|| {
            AppError::invalid_field("/form_version", "is not a published version of this form")
        })?;
    if status != registry::PUBLISHED {
        return Err(AppError::invalid_field(
            "/form_version",
            "is retired; sync to get the current version",
        ));
    }
    let form = forms.get(conn, &envelope.form_id, &envelope.form_version)?;
    if form.meta.programme != key_programme {
        return Err(AppError::invalid_field(
            "/form_id",
            "belongs to another programme than the key it was encrypted for",
        ));
    }
    let prepared = Prepared {
        instance_id,
        // Both set once the data is valid: no work on what is refused.
        payload: String::new(),
        cells: Default::default(),
        repeats: None,
        content_sha256: String::new(),
        kid,
        raw,
        files,
        programme: form.meta.programme.clone(),
        case_role: form.meta.case,
        event: SubmissionEvent {
            name: form.meta.event.clone(),
            occurred_at: String::new(),
            facts: Default::default(),
        },
        identity: Identity::default(),
        problems: None,
        envelope,
    };

    // 4. May the caller submit for this case? (Checked again when storing.)
    let opened_earlier = prepared
        .envelope
        .case_id
        .is_some_and(|case| opened_earlier.contains(&case));
    // The number of the case a form is about, for its `x-case-number`
    // fields, from the case the plan has just read.
    let case_number = match case_plan(conn, who, &prepared) {
        Err(AppError::Forbidden(_)) if opened_earlier => None,
        judged => match judged? {
            CasePlan::Update(case) => case.number,
            _ => None,
        },
    };

    // 5. The data against that exact version, attachments included.
    let data = &envelope_value["data"];
    let mut report = form.report(data);
    for error in &mut report.errors {
        error.pointer.insert_str(0, "/data");
    }
    report.errors.extend(Identity::unsafe_name(data));
    report.errors.extend(case_number_answers(
        &form.fields,
        data,
        case_number.as_deref(),
    ));
    report.errors.extend(attachments::check_references(
        &form.fields,
        data,
        &prepared.envelope.attachments,
    ));
    let mut prepared = prepared;
    if !report.is_valid() && quarantine {
        // Kept as sent, hashed as any submission (a resend is a retry);
        // nothing of it is read into a case, an event or an export.
        prepared.payload = envelope_value.to_string();
        prepared.content_sha256 =
            hex::encode(Sha256::digest(canonical(&envelope_value).as_bytes()));
        prepared.problems = Some(report.errors);
        return Ok(prepared);
    }
    if !report.is_valid() {
        return Err(AppError::invalid_data(report.errors, report.unlisted));
    }
    // Hashed as sent: a retry matches even if the case was renumbered since
    // (a readmission link), while what is stored carries the number.
    prepared.content_sha256 = hex::encode(Sha256::digest(canonical(&envelope_value).as_bytes()));
    if let Some(number) = &case_number {
        fill_case_number(&mut envelope_value["data"], &form.fields, number);
    }
    let data = &envelope_value["data"];
    if let Value::Object(data) = data {
        prepared.envelope.data = data.clone();
    }
    prepared.payload = envelope_value.to_string();
    prepared.event = SubmissionEvent::of(&form, data, prepared.envelope.completed_at);
    let event_day = Programmes::shipped()
        .get(&prepared.programme)
        .and_then(|p| {
            let calendar = &p.calendar;
            calendar
                .moment(&Value::String(prepared.event.occurred_at.clone()))
                .map(|m| calendar.local_date(m.at))
        })
        .unwrap_or(prepared.envelope.completed_at.date_naive());
    prepared.cells = cells::stored_cells(columns::layout(&form), data, event_day);
    prepared.repeats = repeats::places(&form.fields, &form.meta.occurred_at)
        .map(|places| repeats::stored(&places, data));
    if prepared.case_role == CaseRole::Opens {
        prepared.identity = Identity::of(data, &prepared.event.facts);
    }
    Ok(prepared)
}

/// The answers to `x-case-number` fields (Annexes D, E, G, H, I "Case ID
/// Number", BT registration `header/case_no`): the case's number is the
/// server's, never a second one typed in. A form that opens a case leaves
/// it empty (the number exists once the server opens the case); a form
/// about a case may carry it only as the case has it (`number`).
fn case_number_answers(
    fields: &[crate::forms::model::Field],
    data: &Value,
    number: Option<&str>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for field in fields.iter().filter(|f| f.case_number) {
        for (pointer, value) in field.values_in(data) {
            let Some(text) = value.as_str().map(str::trim).filter(|t| !t.is_empty()) else {
                continue;
            };
            if number == Some(text) {
                continue;
            }
            let why = match number {
                Some(n) => format!("is not this case's number ({n}); leave it to the phone, which fills it from the case"),
                None => "the case number is given by the server when this form opens the case: leave it empty (the case shows its number once received)".to_string(),
            };
            errors.push(FieldError::new(format!("/data{pointer}"), why));
        }
    }
    errors
}

/// Writes the case's number into the `x-case-number` fields a form about
/// the case left empty (ODK Collect never asks for it), so the stored
/// answers carry it like the paper form does (#20 item 8). Only fields
/// outside repeats, under an object the answers already have.
fn fill_case_number(data: &mut Value, fields: &[crate::forms::model::Field], number: &str) {
    for field in fields
        .iter()
        .filter(|f| f.case_number && !f.path.contains("[]"))
    {
        let mut segments: Vec<&str> = field.path.split('/').collect();
        let Some(key) = segments.pop() else { continue };
        let parent = segments
            .iter()
            .try_fold(&mut *data, |node, segment| node.get_mut(*segment));
        if let Some(Value::Object(parent)) = parent {
            let empty = parent
                .get(key)
                .is_none_or(|v| v.as_str().is_some_and(|t| t.trim().is_empty()) || v.is_null());
            if empty {
                parent.insert(key.to_string(), Value::String(number.to_string()));
            }
        }
    }
}

fn case_plan(conn: &mut DbConnection, who: &Principal, p: &Prepared) -> AppResult<CasePlan> {
    crate::auth::policy::submit_forms(who)?;
    let case_id = p.envelope.case_id.map(|c| c.to_string());
    let existing = match &case_id {
        Some(id) => cases::find(conn, id)?,
        None => None,
    };
    match p.case_role {
        CaseRole::Opens => {
            if case_id.is_none() {
                return Err(AppError::invalid_field(
                    "/case_id",
                    "is required: this form opens a case",
                ));
            }
            match existing {
                Some(case) if case.opened_by_instance == p.instance_id => {
                    Ok(CasePlan::Reopened(case))
                }
                // A held form a coordinator corrected, sent again by the
                // phone: its accepted version opened the case (a retry).
                Some(case)
                    if case.opened_by_instance
                        == held::corrected_id(&p.instance_id).to_string() =>
                {
                    Ok(CasePlan::Reopened(case))
                }
                // An edit of the form that opened the case.
                Some(case)
                    if p.envelope.supersedes.is_some() && cases::may_submit_for(who, &case) =>
                {
                    Ok(CasePlan::Reopened(case))
                }
                Some(_) => Err(AppError::invalid_field(
                    "/case_id",
                    "a case with this id already exists",
                )),
                None => {
                    let site = sites::list(conn, Some(&who.site_ids))?
                        .into_iter()
                        .find(|s| s.programme == p.programme && s.active)
                        .ok_or_else(|| {
                            AppError::Forbidden(format!(
                                "you work at no site of programme {}",
                                p.programme
                            ))
                        })?;
                    Ok(CasePlan::Open { site })
                }
            }
        }
        CaseRole::Updates => {
            if case_id.is_none() {
                return Err(AppError::invalid_field(
                    "/case_id",
                    "is required: this form belongs to a case",
                ));
            }
            match existing {
                Some(case)
                    if case.programme == p.programme && cases::may_submit_for(who, &case) =>
                {
                    Ok(CasePlan::Update(case))
                }
                // Its opening form may still be on its way (offline phones
                // and retries reorder forms): judged when the case opens.
                None if works_in_programme(conn, who, &p.programme)? => Ok(CasePlan::Hold),
                _ => Err(AppError::Forbidden(
                    "you may not submit forms for this case".into(),
                )),
            }
        }
        CaseRole::None => match case_id {
            Some(_) => Err(AppError::invalid_field(
                "/case_id",
                "must be absent: this form is not about a case",
            )),
            None => Ok(CasePlan::NoCase),
        },
    }
}

/// Whether `who` works at an active site of `programme` (where a case of
/// theirs would open).
pub fn works_in_programme(
    conn: &mut DbConnection,
    who: &Principal,
    programme: &str,
) -> AppResult<bool> {
    Ok(sites::list(conn, Some(&who.site_ids))?
        .into_iter()
        .any(|s| s.programme == programme && s.active))
}

/// Stores a prepared submission. Call inside a write transaction (or a
/// savepoint of one): the idempotency check, the case change, the row, its
/// attachments' declarations and the audit row commit together.
pub fn store(
    conn: &mut DbConnection,
    who: &Principal,
    origin: &Origin,
    p: &Prepared,
) -> AppResult<Stored> {
    let stored = store_unaudited(conn, who, p)?;
    if let Stored::Created(receipt) = &stored {
        audit_received(conn, who, origin, p, receipt)?;
    }
    Ok(stored)
}

/// The audit row of a stored submission. Written last in its transaction:
/// on PostgreSQL the audit chain's head is locked until commit, and a
/// transaction that took it before a case's row could deadlock with one
/// that took them the other way round.
pub fn audit_received(
    conn: &mut DbConnection,
    who: &Principal,
    origin: &Origin,
    p: &Prepared,
    receipt: &Receipt,
) -> AppResult<()> {
    let (action, what) = match &p.problems {
        None => (
            "submission_received",
            format!("{} {}", p.envelope.form_id, p.envelope.form_version),
        ),
        Some(problems) => (
            "submission_quarantined",
            format!(
                "{} {}; held for a coordinator: {} problem(s) at {}",
                p.envelope.form_id,
                p.envelope.form_version,
                problems.len(),
                problems
                    .iter()
                    .map(|e| e.pointer.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    audit::record(
        conn,
        origin,
        Event::new(Some(who), action)
            .object("submission", &p.instance_id)
            .detail(&what),
    )?;
    held::audit_refusals(conn, origin, &receipt.refused_held)
}

/// [`store`] without its audit row, which the caller writes once every
/// other row of its transaction is written.
pub fn store_unaudited(
    conn: &mut DbConnection,
    who: &Principal,
    p: &Prepared,
) -> AppResult<Stored> {
    if let Some((sha, receipt)) = receipt_of(conn, &p.instance_id)? {
        return if sha == p.content_sha256 {
            Ok(Stored::Repeated(receipt))
        } else {
            Err(AppError::Conflict(
                "this instance_id was already submitted with other content".into(),
            ))
        };
    }
    if let Some(problems) = &p.problems {
        return store_quarantined(conn, who, p, problems);
    }
    let envelope = &p.envelope;
    let case_id = envelope.case_id.map(|c| c.to_string());
    let mut plan = case_plan(conn, who, p)?;
    if let (CasePlan::Hold, Some(id)) = (&plan, &case_id) {
        // Another server may be opening the case right now: once it has
        // (or before it may), judge again.
        held::lock(conn, id)?;
        plan = case_plan(conn, who, p)?;
    }
    let opens = matches!(plan, CasePlan::Open { .. });
    let held_for = match plan {
        CasePlan::Hold => case_id.clone(),
        _ => None,
    };
    let (case, seq) = match (plan, &case_id) {
        (CasePlan::Open { site }, Some(id)) => {
            let programme = reconcile::programme_of(&p.programme)?;
            let opener = users::get(conn, &who.user_id)?;
            let calendar = &programme.calendar;
            let occurred_at = calendar
                .moment(&Value::String(p.event.occurred_at.clone()))
                .map_or(envelope.completed_at.to_utc(), |m| m.at);
            let case = cases::open(
                conn,
                cases::Opening {
                    id,
                    programme: &programme,
                    site: &site,
                    by: who,
                    by_display_name: &opener.display_name,
                    by_initials: opener.initials.as_deref(),
                    instance_id: &p.instance_id,
                    occurred_at,
                    identity: p.identity.clone(),
                },
            )?;
            (Some(case), 1)
        }
        (CasePlan::Update(case) | CasePlan::Reopened(case), _) => {
            let seq = cases::touch(conn, &case)?;
            (Some(case), seq)
        }
        _ => (None, 0),
    };
    let supersedes = envelope.supersedes.map(|s| s.to_string());
    if let Some(earlier) = &supersedes {
        let found: Option<(String, Option<String>, Option<String>)> = submissions::table
            .find(earlier)
            .select((
                submissions::form_id,
                submissions::case_id,
                submissions::pending_case_id,
            ))
            .first(conn)
            .optional()?;
        // A held form names its case in pending_case_id.
        let found = found.map(|(form, case, pending)| (form, case.or(pending)));
        if found != Some((envelope.form_id.clone(), case_id.clone())) || earlier == &p.instance_id {
            return Err(AppError::invalid_field(
                "/supersedes",
                "must name an earlier submission of the same form and case",
            ));
        }
        rows::supersede(conn, earlier, &p.instance_id)?;
    }
    let received_at = now();
    let all_received = envelope
        .attachments
        .iter()
        .all(|d| p.files.iter().any(|f| f.name == d.name));
    let status = if held_for.is_some() {
        PENDING_CASE
    } else if all_received {
        COMPLETE
    } else {
        AWAITING_ATTACHMENTS
    };
    let pending_event = match &held_for {
        Some(_) => Some(held::HeldEvent::of(p).to_json()?),
        None => None,
    };
    rows::insert(
        conn,
        &NewSubmission {
            case_id: case.as_ref().map(|c| c.id.as_str()),
            supersedes: supersedes.as_deref(),
            site_id: case.as_ref().map(|c| c.site_id.as_str()),
            case_number: case.as_ref().and_then(|c| c.number.as_deref()),
            pending_case_id: held_for.as_deref(),
            pending_event: pending_event.as_deref(),
            ..p.row(&who.user_id, received_at, status)
        },
        Some(&p.cells),
        p.repeats.as_ref(),
    )?;
    attachments::declare(conn, &p.instance_id, &envelope.attachments)?;
    attachments::arrived_with(conn, &p.instance_id, &p.files, received_at)?;
    if let Some(case) = &case {
        reconcile::submission(
            conn,
            &case.id,
            seq,
            reconcile::Stored {
                instance_id: &p.instance_id,
                event: &p.event,
                by: &who.user_id,
                base_version: envelope.base_case_version,
                supersedes: supersedes.as_deref(),
            },
        )?;
        crate::privacy::from_forms::record(
            conn,
            who,
            case,
            &envelope.form_id,
            &envelope.data,
            &p.instance_id,
            supersedes.as_deref(),
            received_at.and_utc(),
        )?;
    }
    // The forms that arrived before this one, which opens their case, join
    // it now, in this transaction, or are refused.
    let refused_held = match &case {
        Some(case) if opens => held::join(conn, &case.id)?,
        _ => Vec::new(),
    };
    Ok(Stored::Created(Receipt {
        instance_id: p.instance_id.clone(),
        received_at,
        case_id: case.map(|c| c.id).or(held_for),
        status: status.to_string(),
        refused_held,
    }))
}

/// Stores a quarantined submission ([`Prepared::problems`]): its row (no
/// case, no export cells, nothing folded) with the problems, and the files
/// that came with it, for a coordinator (`held::list`).
fn store_quarantined(
    conn: &mut DbConnection,
    who: &Principal,
    p: &Prepared,
    problems: &[FieldError],
) -> AppResult<Stored> {
    let envelope = &p.envelope;
    let problems = serde_json::to_string(problems).map_err(AppError::internal)?;
    let received_at = now();
    rows::insert(
        conn,
        &NewSubmission {
            problems: Some(&problems),
            ..p.row(&who.user_id, received_at, QUARANTINED)
        },
        None,
        None,
    )?;
    attachments::declare(conn, &p.instance_id, &envelope.attachments)?;
    attachments::arrived_with(conn, &p.instance_id, &p.files, received_at)?;
    Ok(Stored::Created(Receipt {
        instance_id: p.instance_id.clone(),
        received_at,
        case_id: envelope.case_id.map(|c| c.to_string()),
        status: QUARANTINED.to_string(),
        refused_held: Vec::new(),
    }))
}

/// After `store` failed: a copy of the same submission that won a race (in
/// another transaction) makes this one a retry, not an error.
pub fn settle_race(conn: &mut DbConnection, p: &Prepared, failure: AppError) -> AppResult<Stored> {
    if matches!(
        failure,
        AppError::Conflict(_) | AppError::Validation { .. } | AppError::InvalidData { .. }
    ) {
        if let Some((sha, receipt)) = receipt_of(conn, &p.instance_id)? {
            if sha == p.content_sha256 {
                return Ok(Stored::Repeated(receipt));
            }
        }
    }
    Err(failure)
}

/// Limits a submission is checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_attachment_bytes: u64,
    /// The largest JWE, batch items included.
    pub max_submission_bytes: usize,
}

/// Ingests one JWE from `who` in its own transaction (the group committer
/// is the fast path; this one serves tools and tests).
pub fn ingest(
    conn: &mut DbConnection,
    forms: &FormCache,
    keys: &KeyRing,
    limits: &Limits,
    who: &Principal,
    origin: &Origin,
    raw: String,
) -> AppResult<Stored> {
    let prepared = prepare(conn, forms, keys, limits, who, raw)?;
    match write_tx(conn, |conn| store(conn, who, origin, &prepared)) {
        Ok(stored) => Ok(stored),
        Err(failure) => settle_race(conn, &prepared, failure),
    }
}
