use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::Items;
use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::{policy, Principal};
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::forms::{check, definitions, diff, registry, CompiledForm, FormId, FormRef};
use crate::http::extract::{parse_json, ApiJson, AuthUser, JsonBody};

/// A draft as stored.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct DraftSaved {
    form_id: String,
    version: String,
    /// How many fields the form has.
    fields: usize,
    uploaded_at: chrono::DateTime<chrono::Utc>,
}

/// What data checked against a version is: problems capped as a
/// submission's are.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Validated {
    valid: bool,
    errors: Vec<FieldError>,
    /// Problems found beyond those listed.
    unlisted_errors: usize,
}

/// `GET /api/v1/forms`: every form with its versions (any signed-in user:
/// phones need them).
#[utoipa::path(
    get,
    path = "/forms",
    tag = "forms",
    responses((status = 200, description = "Every form with its versions", body = Items<registry::FormSummary>)),
)]
pub async fn list(state: web::Data<AppState>, AuthUser(_me): AuthUser) -> AppResult<HttpResponse> {
    let items = state.db(registry::list).await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

fn etag_matches(req: &HttpRequest, sha256: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|tag| tag == sha256 || tag == "*")
}

fn document_response(req: &HttpRequest, row: registry::VersionRow) -> HttpResponse {
    let etag = format!("\"{}\"", row.sha256);
    if etag_matches(req, &row.sha256) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish();
    }
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header(("X-Form-Version", row.version))
        .insert_header(("X-Form-Status", row.status))
        .content_type("application/schema+json")
        .body(row.document)
}

/// `GET /api/v1/forms/{id}`: the current version's bundled schema, with an
/// ETag (its sha256); `If-None-Match` answers 304.
#[utoipa::path(
    get,
    path = "/forms/{id}",
    tag = "forms",
    params(("id" = FormId, Path), ("If-None-Match" = Option<String>, Header, description = "An ETag held")),
    responses((status = 200, description = "The current version's bundled JSON Schema", content_type = "application/schema+json", body = Object, headers(("ETag" = String, description = "The version's sha256"), ("X-Form-Version" = String), ("X-Form-Status" = String, description = "published or retired"))), (status = 304, description = "Not changed since the ETag given"), (status = 404, description = "No such form or version", body = Problem, content_type = "application/problem+json")),
)]
pub async fn current(
    state: web::Data<AppState>,
    req: HttpRequest,
    AuthUser(_me): AuthUser,
    id: web::Path<FormId>,
) -> AppResult<HttpResponse> {
    let row = state.db(move |conn| registry::current(conn, &id)).await?;
    Ok(document_response(&req, row))
}

/// `GET /api/v1/forms/{id}/versions/{version}`
#[utoipa::path(
    get,
    path = "/forms/{id}/versions/{version}",
    tag = "forms",
    params(FormRef, ("If-None-Match" = Option<String>, Header, description = "An ETag held")),
    responses((status = 200, description = "That version's bundled JSON Schema (also when retired)", content_type = "application/schema+json", body = Object, headers(("ETag" = String, description = "The version's sha256"), ("X-Form-Version" = String), ("X-Form-Status" = String, description = "published or retired"))), (status = 304, description = "Not changed since the ETag given"), (status = 404, description = "No such form or version", body = Problem, content_type = "application/problem+json")),
)]
pub async fn version(
    state: web::Data<AppState>,
    req: HttpRequest,
    AuthUser(_me): AuthUser,
    form: web::Path<FormRef>,
) -> AppResult<HttpResponse> {
    let FormRef {
        form_id: id,
        version: v,
    } = form.into_inner();
    let row = state
        .db(move |conn| registry::version(conn, &id, &v))
        .await?;
    Ok(document_response(&req, row))
}

/// `GET /api/v1/forms/{id}/versions/{a}/diff/{b}`: from a to b, the form's
/// title, description and labels, and the fields added, removed and changed
/// (`forms::diff` says in what).
#[utoipa::path(
    get,
    path = "/forms/{id}/versions/{a}/diff/{b}",
    tag = "forms",
    params(("id" = FormId, Path), ("a" = String, Path, description = "The older version"), ("b" = String, Path, description = "The newer version")),
    responses((status = 200, description = "What changed between two versions, field by field (docs/api.md)", body = Object), (status = 404, description = "No such form or version", body = Problem, content_type = "application/problem+json")),
)]
pub async fn version_diff(
    state: web::Data<AppState>,
    AuthUser(_me): AuthUser,
    path: web::Path<(FormId, String, String)>,
) -> AppResult<HttpResponse> {
    let (id, a, b) = path.into_inner();
    let (from, to, changes) = compared(&state, id, a, b).await?;
    let mut body = json!(changes);
    body["form_id"] = json!(from.meta.id);
    body["from"] = json!(from.meta.version);
    body["to"] = json!(to.meta.version);
    Ok(HttpResponse::Ok().json(body))
}

/// Two versions of a form and what changed from the first to the second
/// (the API's diff route and the console's form page).
pub async fn compared(
    state: &AppState,
    id: FormId,
    a: String,
    b: String,
) -> AppResult<(Arc<CompiledForm>, Arc<CompiledForm>, diff::Diff)> {
    let cache = state.forms.clone();
    let (from, to) = state
        .db(move |conn| Ok((cache.get(conn, &id, &a)?, cache.get(conn, &id, &b)?)))
        .await?;
    let changes = diff::diff(&from, &to);
    Ok((from, to, changes))
}

/// `POST /api/v1/forms/{id}/versions/{version}/validate`: checks data
/// against a version without storing anything, so admins can try forms.
/// Parsed and validated on the CPU pool; the errors are capped like a
/// submission's, with `unlisted_errors` counting the rest.
#[utoipa::path(
    post,
    path = "/forms/{id}/versions/{version}/validate",
    tag = "forms",
    params(FormRef),
    request_body(content = serde_json::Value, description = "Form data, as a submission's `data` (any JSON: what is not an object is reported invalid)"),
    responses((status = 200, description = "Whether the data is valid, and its problems (capped); nothing stored", body = Validated), (status = 404, description = "No such form or version", body = Problem, content_type = "application/problem+json")),
)]
pub async fn validate(
    state: web::Data<AppState>,
    AuthUser(_me): AuthUser,
    form: web::Path<FormRef>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let FormRef {
        form_id: id,
        version: v,
    } = form.into_inner();
    let cache = state.forms.clone();
    let report = state
        .cpu_db(body.0.len(), move |conn| {
            let form = cache.get(conn, &id, &v)?;
            let data: Value = parse_json(&body.0)?;
            Ok(form.report(&data))
        })
        .await?;
    Ok(HttpResponse::Ok().json(Validated {
        valid: report.is_valid(),
        errors: report.errors,
        unlisted_errors: report.unlisted,
    }))
}

/// Splits "pointer: message" problems into located errors.
fn located(problems: Vec<String>) -> Vec<FieldError> {
    problems
        .into_iter()
        .map(|p| match p.split_once(": ") {
            Some((at, why)) if at.starts_with('/') || at.is_empty() => FieldError::new(at, why),
            _ => FieldError::new("", p),
        })
        .collect()
}

/// `POST /api/v1/forms/{id}/draft` (admin): uploads a schema as the form's
/// draft, checked against the 2020-12 meta-schema and our vocabulary, its
/// `$ref`s resolved against the shared blocks.
#[utoipa::path(
    post,
    path = "/forms/{id}/draft",
    tag = "forms",
    params(("id" = FormId, Path)),
    request_body(content = Object, description = "A JSON Schema 2020-12 form definition (docs/forms.md) whose `x-form.id` is the form in the path"),
    responses((status = 201, description = "Saved as the form's draft", body = DraftSaved), (status = 422, description = "The definition has problems (each with its schema location)", body = Problem, content_type = "application/problem+json")),
)]
pub async fn upload_draft(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<FormId>,
    body: ApiJson<Value>,
) -> AppResult<HttpResponse> {
    let (draft, fields) = draft_uploaded(&state, origin, me, id.into_inner(), body.0).await?;
    Ok(HttpResponse::Created().json(DraftSaved {
        form_id: draft.form_id,
        version: draft.version,
        fields,
        uploaded_at: draft.uploaded_at.and_utc(),
    }))
}

/// An admin's upload of `source` as the draft of form `id` (the API's
/// route and the console's upload): refused unless the uploader is an
/// admin; checked (the form in the address, the meta-schema, casesync's
/// vocabulary, what ODK Collect can ask) with every problem located and
/// nothing stored; else saved, audited as `form_draft_uploaded`. Gives the
/// draft and how many fields it has.
pub async fn draft_uploaded(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: FormId,
    source: Value,
) -> AppResult<(registry::Draft, usize)> {
    policy::administer(&me, "change forms")?;
    if source.pointer("/x-form/id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(AppError::invalid_field(
            "/x-form/id",
            format!("must be {:?}, the form in the address", id.as_str()),
        ));
    }
    let compiled = check::check(&source, definitions::shipped_resources()).map_err(|problems| {
        AppError::Validation {
            detail: format!("the form definition has {} problem(s)", problems.len()),
            errors: located(problems),
        }
    })?;
    // A form ODK Collect cannot ask is refused here, so it is never published.
    crate::odk::check(&compiled.document).map_err(|problems| AppError::Validation {
        detail: format!(
            "the form cannot be put on a phone (ODK Collect): {} problem(s)",
            problems.len()
        ),
        errors: located(problems),
    })?;
    let fields = compiled.fields.len();
    let uploader = me.user_id.clone();
    let draft = state
        .audited(origin, me, "form_draft_uploaded", move |conn| {
            let draft = registry::save_draft(conn, &source, &compiled, &uploader)?;
            let what = Audited::object("form", &draft.form_id).detail(&draft.version);
            Ok((draft, what))
        })
        .await?;
    Ok((draft, fields))
}

/// `GET /api/v1/forms/{id}/draft` (admin): the draft as uploaded.
#[utoipa::path(
    get,
    path = "/forms/{id}/draft",
    tag = "forms",
    params(("id" = FormId, Path)),
    responses((status = 200, description = "The draft as uploaded", content_type = "application/schema+json", body = Object), (status = 404, description = "The form has no draft", body = Problem, content_type = "application/problem+json")),
)]
pub async fn show_draft(
    state: web::Data<AppState>,
    AuthUser(me): AuthUser,
    id: web::Path<FormId>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "see form drafts")?;
    let draft = state.db(move |conn| registry::draft(conn, &id)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/schema+json")
        .body(draft.source))
}

/// `POST /api/v1/forms/{id}/draft/publish` (admin): freezes the draft as a
/// new version; a version string already published is 409.
#[utoipa::path(
    post,
    path = "/forms/{id}/draft/publish",
    tag = "forms",
    params(("id" = FormId, Path)),
    responses((status = 201, description = "The new frozen version", body = registry::VersionInfo), (status = 404, description = "The form has no draft", body = Problem, content_type = "application/problem+json"), (status = 409, description = "That version is already published", body = Problem, content_type = "application/problem+json")),
)]
pub async fn publish_draft(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<FormId>,
) -> AppResult<HttpResponse> {
    let info = draft_published(&state, origin, me, id.into_inner()).await?;
    Ok(HttpResponse::Created().json(info))
}

/// An admin's publishing of form `id`'s draft (the API's route and the
/// console's button), audited as `form_published`; its XForm is stored
/// for phones in the same transaction.
pub async fn draft_published(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: FormId,
) -> AppResult<registry::VersionInfo> {
    policy::administer(&me, "publish forms")?;
    let publisher = me.user_id.clone();
    state
        .audited(origin, me, "form_published", move |conn| {
            let info = registry::publish_draft(conn, &id, &publisher)?;
            crate::odk::store::ensure(conn, &info.form_id, &info.version)?;
            let what = Audited::object("form", &info.form_id).detail(&info.version);
            Ok((info, what))
        })
        .await
}

/// `POST /api/v1/forms/{id}/versions/{version}/retire` (admin): no new
/// submissions against it; what was submitted stays valid.
#[utoipa::path(
    post,
    path = "/forms/{id}/versions/{version}/retire",
    tag = "forms",
    params(FormRef),
    responses((status = 200, description = "The version, retired", body = registry::VersionInfo), (status = 404, description = "No such form or version", body = Problem, content_type = "application/problem+json")),
)]
pub async fn retire(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    form: web::Path<FormRef>,
) -> AppResult<HttpResponse> {
    let info = version_retired(&state, origin, me, form.into_inner()).await?;
    Ok(HttpResponse::Ok().json(info))
}

/// An admin's retiring of a version (the API's route and the console's
/// button), audited as `form_retired`.
pub async fn version_retired(
    state: &AppState,
    origin: Origin,
    me: Principal,
    form: FormRef,
) -> AppResult<registry::VersionInfo> {
    policy::administer(&me, "retire forms")?;
    let FormRef {
        form_id: id,
        version: v,
    } = form;
    state
        .audited(origin, me, "form_retired", move |conn| {
            let info = registry::retire(conn, &id, &v)?;
            let what = Audited::object("form", &info.form_id).detail(&info.version);
            Ok((info, what))
        })
        .await
}
