//! Attachments (signatures, photos): declared in the envelope with name,
//! type, size and sha256; each then arrives as its own JWE. A submission is
//! `complete` once every declared attachment has arrived. The JWE is kept as
//! received, so attachments stay encrypted at rest and are opened on read.

use std::collections::HashSet;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{AttachmentDeclaration, Limits, AWAITING_ATTACHMENTS, COMPLETE};
use crate::audit::{self, Event, Origin};
use crate::auth::{policy, users, Principal};
use crate::cases::{self, views};
use crate::crypto::jwe;
use crate::crypto::keys::KeyRing;
use crate::db::schema::{attachments, submissions};
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult, FieldError};
use crate::forms::model::{Field, FieldKind};
use crate::time::now;

/// The envelope's list on its own: unique, safe names; a media type; a size
/// within the limit; a sha256 in hex. A malformed list is a malformed
/// envelope (400).
pub fn check_declarations(declared: &[AttachmentDeclaration], limits: &Limits) -> AppResult<()> {
    let mut names = HashSet::new();
    let mut errors = Vec::new();
    for (i, d) in declared.iter().enumerate() {
        let at = |field: &str| format!("/attachments/{i}/{field}");
        let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if d.name.is_empty()
            || d.name.len() > 200
            || d.name.starts_with('.')
            || !d.name.chars().all(safe)
        {
            errors.push(FieldError::new(
                at("name"),
                "must be 1–200 letters, digits, '.', '_' or '-', not starting with '.'",
            ));
        } else if !names.insert(d.name.as_str()) {
            errors.push(FieldError::new(at("name"), "is declared twice"));
        }
        // RFC 6838 names: safe to echo back as a Content-Type.
        let token = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
        };
        let (kind, sub) = d.media_type.split_once('/').unwrap_or(("", ""));
        if !token(kind) || !token(sub) || d.media_type.len() > 100 {
            errors.push(FieldError::new(
                at("media_type"),
                "must be a media type such as image/png",
            ));
        }
        if d.size > limits.max_attachment_bytes {
            errors.push(FieldError::new(
                at("size"),
                format!(
                    "is over the limit of {} bytes per attachment",
                    limits.max_attachment_bytes
                ),
            ));
        }
        if d.sha256.len() != 64 || !d.sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
            errors.push(FieldError::new(
                at("sha256"),
                "must be 64 lowercase hex digits",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::BadRequest {
            detail: "the attachments list is malformed".into(),
            errors,
        })
    }
}

/// Every attachment field in `data` must name a declared attachment of an
/// accepted type and size (the field's `x-attachment`).
pub fn check_references(
    fields: &[Field],
    data: &Value,
    declared: &[AttachmentDeclaration],
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for field in fields.iter().filter(|f| f.kind == FieldKind::Attachment) {
        let rules = field.attachment.as_ref();
        for (pointer, value) in field.values_in(data) {
            let pointer = format!("/data{pointer}");
            let Some(d) = value
                .as_str()
                .and_then(|name| declared.iter().find(|d| d.name == name))
            else {
                errors.push(FieldError::new(
                    pointer,
                    "names no attachment declared in the envelope",
                ));
                continue;
            };
            let types = rules
                .and_then(|r| r.get("media_types"))
                .and_then(Value::as_array);
            if types.is_some_and(|t| !t.iter().any(|t| t.as_str() == Some(&d.media_type))) {
                errors.push(FieldError::new(
                    pointer.clone(),
                    "the attachment's media type is not one this field accepts",
                ));
            }
            let max = rules
                .and_then(|r| r.get("max_bytes"))
                .and_then(Value::as_u64);
            if max.is_some_and(|max| d.size > max) {
                errors.push(FieldError::new(
                    pointer,
                    "the attachment is larger than this field accepts",
                ));
            }
        }
    }
    errors
}

/// Lists a stored submission's declared attachments, none received yet.
pub(super) fn declare(
    conn: &mut DbConnection,
    instance_id: &str,
    declared: &[AttachmentDeclaration],
) -> AppResult<()> {
    for d in declared {
        diesel::insert_into(attachments::table)
            .values((
                attachments::instance_id.eq(instance_id),
                attachments::name.eq(&d.name),
                attachments::media_type.eq(&d.media_type),
                attachments::size.eq(d.size as i64),
                attachments::sha256.eq(&d.sha256),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Marks the declared attachments that came with their submission (an
/// ODK Collect upload carries its files) as received, in the submission's
/// own transaction: stored as if each had been `PUT` on its own.
pub(super) fn arrived_with(
    conn: &mut DbConnection,
    instance_id: &str,
    files: &[super::ReceivedFile],
    received_at: NaiveDateTime,
) -> AppResult<()> {
    for file in files {
        diesel::update(attachments::table.find((instance_id, &file.name)))
            .set((
                attachments::kid.eq(&file.kid),
                attachments::raw_jwe.eq(&file.raw_jwe),
                attachments::received_at.eq(received_at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AttachmentReceipt {
    pub instance_id: String,
    pub name: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub received_at: NaiveDateTime,
    /// The submission's status after this upload.
    pub submission_status: String,
}

/// A new upload (201) or one already received (200).
#[derive(Debug)]
pub enum Received {
    Created(AttachmentReceipt),
    Repeated(AttachmentReceipt),
}

#[derive(Queryable)]
struct SubmissionRef {
    submitted_by: String,
    case_id: Option<String>,
    kid: String,
    status: String,
}

/// What a missing submission is told, and one the caller may not read.
const NO_SUCH_SUBMISSION: &str = "no such submission; submit the form first";

fn submission_ref(conn: &mut DbConnection, instance_id: &str) -> AppResult<SubmissionRef> {
    submissions::table
        .find(instance_id)
        .select((
            submissions::submitted_by,
            submissions::case_id,
            submissions::kid,
            submissions::status,
        ))
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound(NO_SUCH_SUBMISSION.into()))
}

#[derive(Queryable)]
struct Declared {
    media_type: String,
    size: i64,
    sha256: String,
    kid: Option<String>,
    raw_jwe: Option<String>,
    received_at: Option<NaiveDateTime>,
}

fn declared(conn: &mut DbConnection, instance_id: &str, name: &str) -> AppResult<Declared> {
    attachments::table
        .find((instance_id, name))
        .select((
            attachments::media_type,
            attachments::size,
            attachments::sha256,
            attachments::kid,
            attachments::raw_jwe,
            attachments::received_at,
        ))
        .first(conn)
        .optional()?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "the submission declares no attachment named {name:?}"
            ))
        })
}

/// Stores the JWE carrying attachment `name` of `instance_id`, uploaded by
/// the one who submitted it. Its plaintext must match the declared size and
/// sha256; the programme key must be the submission's.
pub fn receive(
    conn: &mut DbConnection,
    keys: &KeyRing,
    who: &Principal,
    origin: &Origin,
    instance_id: &str,
    name: &str,
    raw: &str,
) -> AppResult<Received> {
    let submission = submission_ref(conn, instance_id)?;
    if submission.submitted_by != who.user_id {
        // Told as missing to whoever may not read it (#16).
        if !may_read(conn, who, &submission)? {
            return Err(AppError::Hidden(NO_SUCH_SUBMISSION.into()));
        }
        return Err(AppError::Forbidden(
            "only the one who sent the submission uploads its attachments".into(),
        ));
    }
    let expected = declared(conn, instance_id, name)?;

    let unreadable = |err: jwe::JweError| {
        AppError::bad_request(format!("the attachment could not be read: {err}"))
    };
    let parsed = jwe::parse(raw).map_err(unreadable)?;
    let (programme, private) = keys
        .get(conn, &parsed.kid)?
        .ok_or_else(|| unreadable(jwe::JweError::UnknownKey))?;
    let submission_programme = keys.get(conn, &submission.kid)?.map(|(p, _)| p);
    if submission_programme.as_deref() != Some(programme.as_str()) {
        return Err(unreadable(jwe::JweError::UnknownKey));
    }
    let plaintext = parsed.decrypt(&private).map_err(unreadable)?;
    let mut errors = Vec::new();
    if plaintext.len() as i64 != expected.size {
        errors.push(FieldError::new(
            "/size",
            format!(
                "the attachment has {} bytes, the submission declared {}",
                plaintext.len(),
                expected.size
            ),
        ));
    }
    if hex::encode(Sha256::digest(&plaintext)) != expected.sha256 {
        errors.push(FieldError::new(
            "/sha256",
            "the attachment's sha256 differs from the declared one",
        ));
    }
    if !errors.is_empty() {
        return Err(AppError::Validation {
            detail: "the attachment is not the one the submission declared".into(),
            errors,
        });
    }

    write_tx(conn, |conn| {
        let current = declared(conn, instance_id, name)?;
        if let Some(received_at) = current.received_at {
            // Same declared sha256, so the same content: a retry.
            let status = submission_ref(conn, instance_id)?.status;
            return Ok(Received::Repeated(AttachmentReceipt {
                instance_id: instance_id.into(),
                name: name.into(),
                received_at,
                submission_status: status,
            }));
        }
        let received_at = now();
        diesel::update(attachments::table.find((instance_id, name)))
            .set((
                attachments::kid.eq(&parsed.kid),
                attachments::raw_jwe.eq(raw),
                attachments::received_at.eq(received_at),
            ))
            .execute(conn)?;
        let missing: i64 = attachments::table
            .filter(attachments::instance_id.eq(instance_id))
            .filter(attachments::received_at.is_null())
            .count()
            .get_result(conn)?;
        let mut status = submission.status.clone();
        // A held form (waiting for its case) stays held; it is complete
        // once it joins its case with every attachment received.
        if missing == 0 && status == AWAITING_ATTACHMENTS {
            diesel::update(submissions::table.find(instance_id))
                .set(submissions::status.eq(COMPLETE))
                .execute(conn)?;
            status = COMPLETE.to_string();
        }
        audit::record(
            conn,
            origin,
            Event::new(Some(who), "attachment_received")
                .object("submission", instance_id)
                .detail(name),
        )?;
        Ok(Received::Created(AttachmentReceipt {
            instance_id: instance_id.into(),
            name: name.into(),
            received_at,
            submission_status: status,
        }))
    })
}

/// An attachment opened for reading.
#[derive(Debug)]
pub struct Opened {
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Whether `who` may read what `submission` holds. About a case: whoever may
/// read the case now (so a reassigned worker loses what they sent with the
/// case). About no case: its sender, or a coordinator of a site of the
/// sender.
fn may_read(conn: &mut DbConnection, who: &Principal, s: &SubmissionRef) -> AppResult<bool> {
    match &s.case_id {
        Some(case_id) => match cases::find(conn, case_id)? {
            Some(case) => Ok(views::access_to(conn, who, &case, Utc::now()).is_ok()),
            None => Ok(false),
        },
        None if s.submitted_by == who.user_id => Ok(true),
        None => {
            let sender = users::get(conn, &s.submitted_by)?;
            Ok(policy::read_caseless_submission(who, &sender.site_ids))
        }
    }
}

/// Opens attachment `name` of `instance_id` for `who`; the read is audited.
pub fn open(
    conn: &mut DbConnection,
    keys: &KeyRing,
    who: &Principal,
    origin: &Origin,
    instance_id: &str,
    name: &str,
) -> AppResult<Opened> {
    let submission = submission_ref(conn, instance_id)?;
    if !may_read(conn, who, &submission)? {
        // Told as missing (#16), and audited as a refusal.
        return Err(AppError::Hidden(NO_SUCH_SUBMISSION.into()));
    }
    let found = declared(conn, instance_id, name)?;
    let (Some(kid), Some(raw)) = (found.kid, found.raw_jwe) else {
        return Err(AppError::NotFound(format!(
            "attachment {name:?} has not been uploaded yet"
        )));
    };
    let (_, private) = keys
        .get(conn, &kid)?
        .ok_or_else(|| AppError::internal(format!("key {kid} of a stored attachment is gone")))?;
    let bytes = jwe::parse(&raw)
        .and_then(|p| p.decrypt(&private))
        .map_err(|e| AppError::internal(format!("a stored attachment does not open: {e}")))?;
    audit::record(
        conn,
        origin,
        Event::new(Some(who), "attachment_read")
            .object("submission", instance_id)
            .detail(name),
    )?;
    Ok(Opened {
        media_type: found.media_type,
        bytes,
    })
}
