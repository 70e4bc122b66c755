//! The form registry: forms, frozen published versions, drafts. Owns the
//! `forms`, `form_versions` and `form_drafts` tables.

use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::definitions::DefinitionSet;
use super::validate::CompiledForm;
use crate::changes::{self, ChangeKind};
use crate::db::schema::{form_drafts, form_versions, forms};
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::time::now;

pub const PUBLISHED: &str = "published";
pub const RETIRED: &str = "retired";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = form_versions)]
pub struct VersionRow {
    pub form_id: String,
    pub version: String,
    pub status: String,
    pub document: String,
    pub sha256: String,
    pub published_at: chrono::NaiveDateTime,
    pub published_by: Option<String>,
    pub retired_at: Option<chrono::NaiveDateTime>,
}

/// A version as listed: everything but the document.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub form_id: String,
    pub version: String,
    pub status: String,
    pub sha256: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub published_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub retired_at: Option<chrono::NaiveDateTime>,
}

impl From<&VersionRow> for VersionInfo {
    fn from(r: &VersionRow) -> Self {
        VersionInfo {
            form_id: r.form_id.clone(),
            version: r.version.clone(),
            status: r.status.clone(),
            sha256: r.sha256.clone(),
            published_at: r.published_at,
            retired_at: r.retired_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FormSummary {
    pub id: String,
    pub programme: String,
    pub title: String,
    /// The newest published (not retired) version, if any.
    pub current_version: Option<String>,
    pub current_sha256: Option<String>,
    pub versions: Vec<VersionInfo>,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = form_drafts)]
pub struct Draft {
    pub form_id: String,
    pub version: String,
    /// The schema as uploaded.
    pub source: String,
    /// The same, bundled.
    pub document: String,
    pub uploaded_by: Option<String>,
    #[serde(serialize_with = "crate::json::utc")]
    pub uploaded_at: chrono::NaiveDateTime,
}

fn ensure_form(conn: &mut DbConnection, form: &CompiledForm) -> AppResult<()> {
    let t = now();
    let updated = diesel::update(forms::table.find(&form.meta.id))
        .set((forms::title.eq(&form.meta.title), forms::updated_at.eq(t)))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(forms::table)
            .values((
                forms::id.eq(&form.meta.id),
                forms::programme.eq(&form.meta.programme),
                forms::title.eq(&form.meta.title),
                forms::created_at.eq(t),
                forms::updated_at.eq(t),
            ))
            .execute(conn)?;
    }
    Ok(())
}

fn find_version(
    conn: &mut DbConnection,
    form_id: &str,
    version: &str,
) -> AppResult<Option<VersionRow>> {
    Ok(form_versions::table
        .find((form_id, version))
        .select(VersionRow::as_select())
        .first(conn)
        .optional()?)
}

/// Freezes a checked form as a new published version. A version string
/// already taken is a conflict: published versions never change.
pub fn publish(
    conn: &mut DbConnection,
    form: &CompiledForm,
    by: Option<&str>,
) -> AppResult<VersionInfo> {
    if find_version(conn, &form.meta.id, &form.meta.version)?.is_some() {
        return Err(AppError::Conflict(format!(
            "version {} of {} is already published; published versions never change — give the new one another version",
            form.meta.version, form.meta.id
        )));
    }
    ensure_form(conn, form)?;
    let row = VersionRow {
        form_id: form.meta.id.clone(),
        version: form.meta.version.clone(),
        status: PUBLISHED.into(),
        document: form.document.to_string(),
        sha256: form.sha256.clone(),
        published_at: now(),
        published_by: by.map(str::to_string),
        retired_at: None,
    };
    diesel::insert_into(form_versions::table)
        .values(&row)
        .execute(conn)?;
    changes::record_change(
        conn,
        ChangeKind::Form,
        &sync_object(&row.form_id, &row.version),
        None,
    )?;
    Ok(VersionInfo::from(&row))
}

/// What publishing the shipped definitions did at start-up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShippedOutcome {
    pub published: Vec<String>,
    pub unchanged: usize,
    /// Shipped versions whose content differs from what the database froze
    /// under the same version string: the database wins.
    pub differing: Vec<String>,
    pub invalid: Vec<String>,
}

/// Publishes every shipped form version the database does not have yet.
pub fn publish_shipped(conn: &mut DbConnection, set: &DefinitionSet) -> AppResult<ShippedOutcome> {
    let mut outcome = ShippedOutcome::default();
    for file in &set.forms {
        // Already published with the same content: nothing to check or do.
        // Bundling and hashing is cheap; checking and compiling is not.
        if let (Some(id), Some(version), Ok(bundled)) = (
            file.document
                .pointer("/x-form/id")
                .and_then(serde_json::Value::as_str),
            file.document
                .pointer("/x-form/version")
                .and_then(serde_json::Value::as_str),
            super::bundle::bundle(&file.document, &set.resources),
        ) {
            let sha = super::bundle::digest(&bundled);
            if find_version(conn, id, version)?.is_some_and(|v| v.sha256 == sha) {
                outcome.unchanged += 1;
                continue;
            }
        }
        let compiled = match super::check::check(&file.document, &set.resources) {
            Ok(c) => c,
            Err(problems) => {
                outcome
                    .invalid
                    .push(format!("{}: {}", file.path.display(), problems.join("; ")));
                continue;
            }
        };
        let label = format!("{} {}", compiled.meta.id, compiled.meta.version);
        let published = write_tx(conn, |conn| {
            match find_version(conn, &compiled.meta.id, &compiled.meta.version)? {
                Some(existing) if existing.sha256 == compiled.sha256 => Ok(false),
                Some(_) => Err(AppError::Conflict(label.clone())),
                None => publish(conn, &compiled, None).map(|_| true),
            }
        });
        match published {
            Ok(true) => outcome.published.push(label),
            Ok(false) => outcome.unchanged += 1,
            Err(AppError::Conflict(_)) => outcome.differing.push(label),
            Err(other) => return Err(other),
        }
    }
    Ok(outcome)
}

/// How a version is named in the sync change log: `form_id@version`.
pub fn sync_object(form_id: &str, version: &str) -> String {
    format!("{form_id}@{version}")
}

/// A version's status (`published`, `retired`), without its document.
pub fn status(conn: &mut DbConnection, form_id: &str, version: &str) -> AppResult<Option<String>> {
    Ok(form_versions::table
        .find((form_id, version))
        .select(form_versions::status)
        .first(conn)
        .optional()?)
}

pub fn version(conn: &mut DbConnection, form_id: &str, version: &str) -> AppResult<VersionRow> {
    find_version(conn, form_id, version)?
        .ok_or_else(|| AppError::NotFound(format!("form {form_id:?} has no version {version:?}")))
}

/// The newest published, not retired, version of a form.
pub fn current(conn: &mut DbConnection, form_id: &str) -> AppResult<VersionRow> {
    form_versions::table
        .filter(form_versions::form_id.eq(form_id))
        .filter(form_versions::status.eq(PUBLISHED))
        .order((
            form_versions::published_at.desc(),
            form_versions::version.desc(),
        ))
        .select(VersionRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound(format!("form {form_id:?} has no published version")))
}

pub fn list(conn: &mut DbConnection) -> AppResult<Vec<FormSummary>> {
    let all_forms: Vec<(String, String, String)> = forms::table
        .select((forms::id, forms::programme, forms::title))
        .order((forms::programme, forms::id))
        .load(conn)?;
    let versions: Vec<(
        String,
        String,
        String,
        String,
        chrono::NaiveDateTime,
        Option<chrono::NaiveDateTime>,
    )> = form_versions::table
        .select((
            form_versions::form_id,
            form_versions::version,
            form_versions::status,
            form_versions::sha256,
            form_versions::published_at,
            form_versions::retired_at,
        ))
        .order((
            form_versions::form_id,
            form_versions::published_at,
            form_versions::version,
        ))
        .load(conn)?;
    Ok(all_forms
        .into_iter()
        .map(|(id, programme, title)| {
            let mine: Vec<VersionInfo> = versions
                .iter()
                .filter(|v| v.0 == id)
                .map(|v| VersionInfo {
                    form_id: v.0.clone(),
                    version: v.1.clone(),
                    status: v.2.clone(),
                    sha256: v.3.clone(),
                    published_at: v.4,
                    retired_at: v.5,
                })
                .collect();
            let current = mine.iter().rev().find(|v| v.status == PUBLISHED);
            FormSummary {
                current_version: current.map(|v| v.version.clone()),
                current_sha256: current.map(|v| v.sha256.clone()),
                id,
                programme,
                title,
                versions: mine,
            }
        })
        .collect())
}

/// Stores an admin's checked upload as the form's draft, replacing any.
pub fn save_draft(
    conn: &mut DbConnection,
    source: &Value,
    form: &CompiledForm,
    by: &str,
) -> AppResult<Draft> {
    let draft = Draft {
        form_id: form.meta.id.clone(),
        version: form.meta.version.clone(),
        source: source.to_string(),
        document: form.document.to_string(),
        uploaded_by: Some(by.to_string()),
        uploaded_at: now(),
    };
    diesel::delete(form_drafts::table.find(&draft.form_id)).execute(conn)?;
    diesel::insert_into(form_drafts::table)
        .values(&draft)
        .execute(conn)?;
    Ok(draft)
}

pub fn draft(conn: &mut DbConnection, form_id: &str) -> AppResult<Draft> {
    form_drafts::table
        .find(form_id)
        .select(Draft::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound(format!("form {form_id:?} has no draft")))
}

/// A draft as listed: its form (with the programme and title the draft
/// gives, for a form not published yet), version and upload.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftInfo {
    pub form_id: String,
    pub version: String,
    pub programme: String,
    pub title: String,
    pub uploaded_by: Option<String>,
    pub uploaded_at: chrono::NaiveDateTime,
}

/// Every form's draft, by form.
pub fn drafts(conn: &mut DbConnection) -> AppResult<Vec<DraftInfo>> {
    let rows: Vec<Draft> = form_drafts::table
        .select(Draft::as_select())
        .order(form_drafts::form_id)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|d| {
            let document: Value = serde_json::from_str(&d.document).unwrap_or_default();
            let text = |pointer: &str| {
                document
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            DraftInfo {
                programme: text("/x-form/programme"),
                title: text("/title"),
                form_id: d.form_id,
                version: d.version,
                uploaded_by: d.uploaded_by,
                uploaded_at: d.uploaded_at,
            }
        })
        .collect())
}

/// Publishes the form's draft as a new version and removes the draft.
pub fn publish_draft(conn: &mut DbConnection, form_id: &str, by: &str) -> AppResult<VersionInfo> {
    let draft = draft(conn, form_id)?;
    let document: Value = serde_json::from_str(&draft.document).map_err(AppError::internal)?;
    let compiled = CompiledForm::compile(document).map_err(|p| {
        AppError::internal(format!(
            "a stored draft no longer compiles: {}",
            p.join("; ")
        ))
    })?;
    let info = publish(conn, &compiled, Some(by))?;
    diesel::delete(form_drafts::table.find(form_id)).execute(conn)?;
    Ok(info)
}

/// Retires a version: no new submissions against it; existing ones stay.
pub fn retire(
    conn: &mut DbConnection,
    form_id: &str,
    version_name: &str,
) -> AppResult<VersionInfo> {
    let found = version(conn, form_id, version_name)?;
    if found.status == PUBLISHED {
        diesel::update(form_versions::table.find((form_id, version_name)))
            .set((
                form_versions::status.eq(RETIRED),
                form_versions::retired_at.eq(now()),
            ))
            .execute(conn)?;
        changes::record_change(
            conn,
            ChangeKind::Form,
            &sync_object(form_id, version_name),
            None,
        )?;
    }
    Ok(VersionInfo::from(&version(conn, form_id, version_name)?))
}

/// Published versions of the forms of `programmes`, as phones sync them.
pub fn published_in(
    conn: &mut DbConnection,
    programmes: &[String],
) -> AppResult<Vec<(String, VersionInfo)>> {
    let rows: Vec<(String, VersionRow)> = form_versions::table
        .inner_join(forms::table)
        .filter(forms::programme.eq_any(programmes))
        .filter(form_versions::status.eq(PUBLISHED))
        .order((form_versions::form_id, form_versions::published_at))
        .select((forms::programme, VersionRow::as_select()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(programme, row)| (programme, VersionInfo::from(&row)))
        .collect())
}

/// The newest published version of each form of `programme`, with the
/// form's title, by form id: what a phone is offered. Reads no schema.
pub fn newest_published_in(
    conn: &mut DbConnection,
    programme: &str,
) -> AppResult<Vec<NewestVersion>> {
    let rows: Vec<(String, String, String)> = form_versions::table
        .inner_join(forms::table)
        .filter(forms::programme.eq(programme))
        .filter(form_versions::status.eq(PUBLISHED))
        .order((form_versions::form_id, form_versions::published_at))
        .select((form_versions::form_id, form_versions::version, forms::title))
        .load(conn)?;
    // Ordered by form, then publication: the last of each form is newest.
    let mut newest: Vec<NewestVersion> = Vec::new();
    for (form_id, version, title) in rows {
        match newest.last_mut() {
            Some(last) if last.form_id == form_id => last.version = version,
            _ => newest.push(NewestVersion {
                form_id,
                version,
                title,
            }),
        }
    }
    Ok(newest)
}

/// A form's newest published version and its title.
#[derive(Debug, Clone, PartialEq)]
pub struct NewestVersion {
    pub form_id: String,
    pub version: String,
    pub title: String,
}

/// A version named as in the sync change log, with its form's programme.
pub fn by_sync_object(
    conn: &mut DbConnection,
    object: &str,
) -> AppResult<Option<(String, VersionInfo)>> {
    let Some((form_id, version)) = object.split_once('@') else {
        return Ok(None);
    };
    let found: Option<(String, VersionRow)> = form_versions::table
        .inner_join(forms::table)
        .filter(form_versions::form_id.eq(form_id))
        .filter(form_versions::version.eq(version))
        .select((forms::programme, VersionRow::as_select()))
        .first(conn)
        .optional()?;
    Ok(found.map(|(programme, row)| (programme, VersionInfo::from(&row))))
}
