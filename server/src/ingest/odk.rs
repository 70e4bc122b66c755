//! The ODK Collect door of the pipeline: an OpenRosa upload (the
//! `xml_submission_file` part and the files beside it) is decrypted with
//! the programme key its XForm carries, read with the form's mapping
//! (`odk::instance`), made into the usual envelope and handed to
//! [`super::prepare_opened`], the same checks a JWE passes.
//!
//! The raw record kept (`submissions.raw_jwe`) is the upload as the phone
//! encrypted it: the manifest and `submission.xml.enc`, which only the
//! programme key opens, as a JWE only the programme key opens. The media
//! are stored as each attachment's own JWE (re-encrypted for the programme
//! key), so they open on read like any attachment and are not kept twice.
//! A plaintext upload (ODK Web Forms does not encrypt) is kept as a JWE of
//! its XML, so nothing is stored in the clear.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use aws_lc_rs::rsa::PublicEncryptingKey;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use diesel::prelude::*;

use super::{Limits, Opened, Prepared, ReceivedFile};
use crate::audit::{self, Event, Origin};
use crate::auth::Principal;
use crate::crypto::keys::KeyRing;
use crate::crypto::{jwe, odk as odk_crypto};
use crate::db::schema::odk_upload_parts;
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::forms::{registry, FormCache};
use crate::odk::{instance, nodes, store};
use crate::submissions::AttachmentDeclaration;
use crate::time::AtMostEvery;

/// One OpenRosa upload, its parts read whole.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The programme whose endpoint it came to.
    pub programme: String,
    /// The `xml_submission_file` part: an encrypted submission's manifest,
    /// or a plaintext instance.
    pub xml: Vec<u8>,
    /// The other parts: (file name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// The `deviceID` query parameter Collect adds.
    pub device_id: Option<String>,
    /// Collect's `*isIncomplete*` part said `yes`: more files follow in
    /// another request.
    pub incomplete: bool,
    /// Whether a plaintext instance may be taken (the `odk_allow_plaintext`
    /// setting, and the request came over TLS or loopback).
    pub plaintext_allowed: bool,
}

/// What an upload came to.
#[derive(Debug)]
pub enum Outcome {
    /// Every file is here: checked, ready for `ingest::store`; with the
    /// instanceID whose kept parts [`forget_parts`] drops once it is stored.
    Ready(Box<Prepared>, Option<String>),
    /// A split upload's part (Collect's `*isIncomplete*`): kept until the
    /// manifest's last file arrives (`odk_upload_parts`).
    Waiting,
}

/// The name the manifest part is kept under among a split upload's parts.
const MANIFEST_PART: &str = "xml_submission_file";

/// The parts of a split upload kept so far: (name, bytes as sent, sender).
fn kept_parts(
    conn: &mut DbConnection,
    instance_id: &str,
) -> AppResult<Vec<(String, Vec<u8>, String)>> {
    let rows: Vec<(String, String, String)> = odk_upload_parts::table
        .filter(odk_upload_parts::instance_id.eq(instance_id))
        .select((
            odk_upload_parts::name,
            odk_upload_parts::content,
            odk_upload_parts::submitted_by,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(name, content, by)| {
            let bytes = STANDARD
                .decode(content)
                .map_err(|_| AppError::internal("a kept upload part is not base64"))?;
            Ok((name, bytes, by))
        })
        .collect()
}

/// Forgets a split upload's kept parts: once it is stored, or refused
/// whole (the phone then sends it again from the start).
pub fn forget_parts(conn: &mut DbConnection, instance_id: &str) -> AppResult<()> {
    diesel::delete(odk_upload_parts::table.filter(odk_upload_parts::instance_id.eq(instance_id)))
        .execute(conn)?;
    Ok(())
}

/// Keeps the parts of a split upload that are not kept yet. Each must be a
/// file the manifest names and look like one Collect encrypted.
fn keep_parts(
    conn: &mut DbConnection,
    who: &Principal,
    manifest: &odk_crypto::Manifest,
    manifest_bytes: &[u8],
    files: &[(String, Vec<u8>)],
) -> AppResult<()> {
    let named: Vec<&str> = manifest
        .media
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(manifest.xml_file.as_str()))
        .collect();
    for (name, bytes) in files {
        let error = if !named.contains(&name.as_str()) {
            Some(odk_crypto::OdkError::UnexpectedFile(
                name.chars().take(80).collect(),
            ))
        } else if bytes.is_empty() {
            Some(odk_crypto::OdkError::EmptyFile(name.clone()))
        } else if bytes.len() % 16 != 0 {
            Some(odk_crypto::OdkError::Truncated(name.clone()))
        } else {
            None
        };
        if let Some(error) = error {
            return Err(unreadable(error));
        }
    }
    let now = crate::time::now();
    write_tx(conn, |conn| {
        let parts = std::iter::once((MANIFEST_PART, manifest_bytes))
            .chain(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
        for (name, bytes) in parts {
            let kept = odk_upload_parts::table
                .find((&manifest.instance_id, name))
                .count()
                .get_result::<i64>(conn)?;
            if kept == 0 {
                diesel::insert_into(odk_upload_parts::table)
                    .values((
                        odk_upload_parts::instance_id.eq(&manifest.instance_id),
                        odk_upload_parts::name.eq(name),
                        odk_upload_parts::submitted_by.eq(&who.user_id),
                        odk_upload_parts::content.eq(STANDARD.encode(bytes)),
                        odk_upload_parts::received_at.eq(now),
                    ))
                    .execute(conn)?;
            }
        }
        Ok(())
    })
}

/// The raw record of an encrypted upload, inside a JWE.
const RAW_FORMAT: &str = "odk-encrypted-1";

fn unreadable(err: odk_crypto::OdkError) -> AppError {
    AppError::bad_request(format!("the submission could not be read: {err}"))
}

/// What Collect shows for a form it should not have: 404 (OpenRosa's
/// "unknown form or version").
fn unknown_form(form_id: &str, version: Option<&str>) -> AppError {
    AppError::NotFound(format!(
        "this server has no form {form_id:?} version {:?} for this programme; update the blank forms on the phone",
        version.unwrap_or("")
    ))
}

/// A stored XForm as ingest needs it, with the mapping its instances are
/// read with.
pub struct KnownForm {
    /// Its `xml` left out: only the names and key are needed here.
    xform: store::StoredXform,
    programme: String,
    table: nodes::FormTable,
}

/// The XForms uploads named, with their mappings: a stored XForm never
/// changes for its form and ODK version (Collect checks its md5), so its
/// mapping is built once per server (`AppState::odk_forms`).
#[derive(Default)]
pub struct OdkForms(
    RwLock<HashMap<(String, String), Arc<KnownForm>>>,
    /// When this server last pruned stale split uploads.
    AtMostEvery,
);

/// How often one server looks for split uploads never finished.
const PRUNE_EVERY_SECS: i64 = 60 * 60;

/// What [`prune_stale_parts`] deleted: counts only, never whose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub parts: usize,
    pub uploads: usize,
}

/// Deletes the kept parts of split uploads that received nothing for
/// `days` days: the phone gave up (or was lost), and these are children's
/// data sent to be stored whole or not at all. An upload still receiving
/// parts keeps all of them. Call in a write transaction.
pub fn prune_stale_parts(
    conn: &mut DbConnection,
    days: i64,
    now: chrono::NaiveDateTime,
) -> AppResult<Pruned> {
    let cutoff = now - chrono::Duration::days(days);
    let ids_received = |since: bool, conn: &mut DbConnection| -> AppResult<HashSet<String>> {
        let query = odk_upload_parts::table.select(odk_upload_parts::instance_id);
        let ids: Vec<String> = if since {
            query
                .filter(odk_upload_parts::received_at.ge(cutoff))
                .load(conn)?
        } else {
            query
                .filter(odk_upload_parts::received_at.lt(cutoff))
                .load(conn)?
        };
        Ok(ids.into_iter().collect())
    };
    let alive = ids_received(true, conn)?;
    let stale: Vec<String> = ids_received(false, conn)?
        .into_iter()
        .filter(|id| !alive.contains(id))
        .collect();
    let parts = diesel::delete(
        odk_upload_parts::table.filter(odk_upload_parts::instance_id.eq_any(&stale)),
    )
    .execute(conn)?;
    Ok(Pruned {
        parts,
        uploads: stale.len(),
    })
}

impl OdkForms {
    /// Whether this server should prune stale split uploads now: at most
    /// once an hour, checked on each OpenRosa upload (no database work
    /// when it is not due).
    pub fn prune_due(&self, now: chrono::NaiveDateTime) -> bool {
        self.1.due(now, PRUNE_EVERY_SECS)
    }
}

/// Prunes stale split uploads ([`prune_stale_parts`]) in its own
/// transaction; a prune that deletes anything is audited
/// (`odk_upload_parts_pruned`) and logged, with counts only.
pub fn prune_and_audit(
    conn: &mut DbConnection,
    days: i64,
    origin: &Origin,
    now: chrono::NaiveDateTime,
) -> AppResult<Pruned> {
    let pruned = write_tx(conn, |conn| {
        let pruned = prune_stale_parts(conn, days, now)?;
        if pruned.parts > 0 {
            let detail = format!(
                "{} parts of {} split uploads unfinished for {days} days deleted",
                pruned.parts, pruned.uploads
            );
            audit::record(
                conn,
                origin,
                Event::new(None, "odk_upload_parts_pruned").detail(&detail),
            )?;
        }
        Ok::<_, AppError>(pruned)
    })?;
    if pruned.parts > 0 {
        tracing::info!(
            parts = pruned.parts,
            uploads = pruned.uploads,
            days,
            "pruned split ODK uploads never finished"
        );
    }
    Ok(pruned)
}

/// The stored XForm an upload names, which must be of `programme`.
fn xform_of(
    conn: &mut DbConnection,
    known: &OdkForms,
    programme: &str,
    form_id: &str,
    version: Option<&str>,
) -> AppResult<Arc<KnownForm>> {
    let odk_version = version.ok_or_else(|| unknown_form(form_id, version))?;
    let known = &known.0;
    let key = (form_id.to_string(), odk_version.to_string());
    let cached = known.read().expect("known forms").get(&key).cloned();
    let found = match cached {
        Some(found) => found,
        None => {
            let mut xform = match store::get(conn, form_id, odk_version) {
                Ok(x) => x,
                Err(AppError::NotFound(_)) => return Err(unknown_form(form_id, version)),
                Err(other) => return Err(other),
            };
            xform.xml = String::new();
            let document: Value =
                serde_json::from_str(&registry::version(conn, form_id, &xform.version)?.document)
                    .map_err(AppError::internal)?;
            let table = nodes::FormTable::build(&document).map_err(|p| {
                AppError::internal(format!("a published form has no mapping: {p:?}"))
            })?;
            let found = Arc::new(KnownForm {
                programme: document
                    .pointer("/x-form/programme")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                xform,
                table,
            });
            known
                .write()
                .expect("known forms")
                .insert(key, found.clone());
            found
        }
    };
    if found.programme != programme {
        return Err(unknown_form(form_id, version));
    }
    Ok(found)
}

/// The envelope of a read instance (docs/odk.md, "The OpenRosa
/// endpoints"): ids without `uuid:`, the JSON-Schema version the ODK
/// version maps back to, timeStart/timeEnd, the hidden case fields, the
/// edit's deprecatedID as `supersedes`, the files with size and sha256.
fn envelope_of(
    read: &instance::Instance,
    form_version: &str,
    device_id: Option<&str>,
    media: &[(String, Vec<u8>)],
) -> AppResult<Value> {
    let meta = &read.meta;
    let instance_id = meta
        .instance_id
        .clone()
        .ok_or_else(|| AppError::bad_request("the form has no meta/instanceID"))?;
    // The entity (ODK Entities) names the case and the version it was
    // made from; the hidden fields say the same, and must agree.
    let case_id = agreed(
        &meta.entity_id,
        &meta.case_id,
        "meta/entity id",
        "meta/case_id",
    )?;
    let base_case_version = agreed(
        &meta.entity_base_version,
        &meta.base_case_version,
        "meta/entity baseVersion",
        "meta/base_case_version",
    )?;
    let base_case_version = match base_case_version {
        Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
            AppError::bad_request("the form's base_case_version is not a whole number")
        })?),
        None => None,
    };
    let device_id = device_id
        .or(meta.device_id.as_deref())
        .unwrap_or("odk")
        .to_string();
    let completed_at = meta
        .time_end
        .clone()
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339());
    let attachments: Vec<Value> = media
        .iter()
        .map(|(name, bytes)| AttachmentDeclaration::of(name, bytes).to_json())
        .collect();
    let mut envelope = Map::new();
    envelope.insert("instance_id".into(), json!(instance_id));
    envelope.insert("form_id".into(), json!(read.form_id));
    envelope.insert("form_version".into(), json!(form_version));
    envelope.insert("device_id".into(), json!(device_id));
    envelope.insert("completed_at".into(), json!(completed_at));
    if let Some(start) = &meta.time_start {
        envelope.insert("started_at".into(), json!(start));
    }
    if let Some(case) = case_id {
        envelope.insert("case_id".into(), json!(case));
    }
    if let Some(version) = base_case_version {
        envelope.insert("base_case_version".into(), json!(version));
    }
    if let Some(old) = &meta.deprecated_id {
        envelope.insert("supersedes".into(), json!(old));
    }
    envelope.insert("attachments".into(), Value::Array(attachments));
    envelope.insert("data".into(), Value::Object(read.answers.clone()));
    Ok(Value::Object(envelope))
}

/// The value `entity` and `hidden` both give (either, when one is blank);
/// a form where they differ was altered and is refused.
fn agreed<'a>(
    entity: &'a Option<String>,
    hidden: &'a Option<String>,
    entity_name: &str,
    hidden_name: &str,
) -> AppResult<Option<&'a String>> {
    match (entity, hidden) {
        (Some(a), Some(b)) if a.trim() != b.trim() => Err(AppError::bad_request(format!(
            "the form's {entity_name} and {hidden_name} differ; send the form again from the phone"
        ))),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b.as_ref()),
    }
}

/// Re-encrypts each file for the programme key: stored as `PUT
/// …/attachments/{name}` stores a file.
fn sealed_files(
    public: &PublicEncryptingKey,
    kid: &str,
    media: &[(String, Vec<u8>)],
) -> Vec<ReceivedFile> {
    media
        .iter()
        .map(|(name, bytes)| ReceivedFile {
            name: name.clone(),
            kid: kid.to_string(),
            raw_jwe: jwe::encrypt(bytes, kid, public),
        })
        .collect()
}

/// The root's `id` and `version` of a plaintext instance.
fn root_identity(xml: &str) -> Result<(String, Option<String>), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == name)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                };
                let id = attr(b"id").ok_or("its root has no id")?;
                return Ok((id, attr(b"version")));
            }
            Ok(Event::DocType(_)) => return Err("a DOCTYPE is not accepted".into()),
            Ok(Event::Eof) => return Err("it has no root element".into()),
            Err(e) => return Err(format!("not well-formed XML: {e}")),
            Ok(_) => {}
        }
    }
}

/// Decrypts and reads one upload to `programme`'s OpenRosa endpoint, then
/// checks it as any submission ([`super::prepare_opened`]). Writes nothing
/// but the parts of a split upload that is not complete yet. CPU-heavy:
/// callers run it on the CPU pool.
pub fn prepare(
    conn: &mut DbConnection,
    forms: &FormCache,
    odk_forms: &OdkForms,
    keys: &KeyRing,
    limits: &Limits,
    who: &Principal,
    upload: Upload,
) -> AppResult<Outcome> {
    let programme = upload.programme.as_str();
    let mut split = None;
    let (xml, media, known, raw) = match odk_crypto::parse_manifest(&upload.xml) {
        Ok(manifest) => {
            let known = xform_of(
                conn,
                odk_forms,
                programme,
                &manifest.form_id,
                manifest.version.as_deref(),
            )?;
            let (_, private) = keys
                .get(conn, &known.xform.key_id)?
                .ok_or_else(|| AppError::internal("the key of a stored XForm is gone"))?;
            // A split upload: the parts sent before, by the same phone
            // with the same manifest, join this one's.
            let sent = upload.files.len();
            let mut files = upload.files;
            let kept = kept_parts(conn, &manifest.instance_id)?;
            for (name, bytes, by) in &kept {
                if by != &who.user_id || (name == MANIFEST_PART && *bytes != upload.xml) {
                    return Err(AppError::Conflict(
                        "this instanceID is already being sent with another manifest or by someone else".into(),
                    ));
                }
                if name != MANIFEST_PART && !files.iter().any(|(n, _)| n == name) {
                    files.push((name.clone(), bytes.clone()));
                }
            }
            let complete = manifest
                .media
                .iter()
                .chain(std::iter::once(&manifest.xml_file))
                .all(|name| files.iter().any(|(n, _)| n == name));
            if !complete && (upload.incomplete || !kept.is_empty()) {
                keep_parts(conn, who, &manifest, &upload.xml, &files[..sent])?;
                return Ok(Outcome::Waiting);
            }
            if !kept.is_empty() {
                split = Some(manifest.instance_id.clone());
            }
            let parts: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect();
            let opened = match manifest.decrypt(&private, &parts) {
                Ok(opened) => opened,
                Err(err) => {
                    // Refused whole: the phone sends it again from the start.
                    if !kept.is_empty() {
                        write_tx(conn, |conn| forget_parts(conn, &manifest.instance_id))?;
                    }
                    return Err(unreadable(err));
                }
            };
            let xml = String::from_utf8(opened.xml.bytes)
                .map_err(|_| AppError::bad_request("the decrypted form is not UTF-8 text"))?;
            let media: Vec<(String, Vec<u8>)> = opened
                .media
                .into_iter()
                .map(|f| (f.name, f.bytes))
                .collect();
            // The manifest and the encrypted form, as the phone sent them.
            let xml_part = files
                .iter()
                .find(|(n, _)| *n == manifest.xml_file)
                .map(|(_, b)| STANDARD.encode(b))
                .unwrap_or_default();
            let record = json!({
                "format": RAW_FORMAT,
                "manifest": String::from_utf8_lossy(&upload.xml),
                "files": { manifest.xml_file.clone(): xml_part },
            });
            (xml, media, known, record.to_string())
        }
        Err(odk_crypto::OdkError::NotEncrypted) if upload.plaintext_allowed => {
            let xml = String::from_utf8(upload.xml)
                .map_err(|_| AppError::bad_request("the form is not UTF-8 text"))?;
            let (form_id, version) = root_identity(&xml)
                .map_err(|why| AppError::bad_request(format!("the form could not be read: {why}")))?;
            let known = xform_of(conn, odk_forms, programme, &form_id, version.as_deref())?;
            (xml.clone(), upload.files, known, xml)
        }
        Err(odk_crypto::OdkError::NotEncrypted) => {
            return Err(AppError::bad_request(
                "this server takes only encrypted submissions: update the blank form on the phone (it carries the programme's key)",
            ))
        }
        Err(other) => return Err(unreadable(other)),
    };
    // The form itself within a submission's size, however it came; each
    // file is held to max_attachment_bytes with the envelope's list.
    if xml.len() > limits.max_submission_bytes {
        return Err(AppError::PayloadTooLarge {
            limit: limits.max_submission_bytes,
        });
    }
    let xform = &known.xform;
    let read = instance::read(&known.table, &xml)
        .map_err(|why| AppError::bad_request(format!("the form could not be read: {why}")))?;
    if read.form_id != xform.form_id || read.version.as_deref() != Some(&xform.odk_version) {
        return Err(AppError::bad_request(
            "the form inside is not the form the upload names",
        ));
    }
    let envelope = envelope_of(&read, &xform.version, upload.device_id.as_deref(), &media)?;
    let (key_programme, private) = keys
        .get(conn, &xform.key_id)?
        .ok_or_else(|| AppError::internal("the key of a stored XForm is gone"))?;
    let public = private.public_key();
    let raw = jwe::encrypt(raw.as_bytes(), &xform.key_id, &public);
    super::prepare_opened(
        conn,
        forms,
        limits,
        who,
        Opened {
            envelope,
            kid: xform.key_id.clone(),
            key_programme,
            raw,
            files: sealed_files(&public, &xform.key_id, &media),
            // A sent ODK form cannot be fixed on the phone: answers the
            // form version refuses are held for a coordinator.
            quarantine: true,
        },
        &HashSet::new(),
    )
    .map(|p| Outcome::Ready(Box::new(p), split))
}
