use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::policy;
use crate::error::{AppError, AppResult, FieldError};
use crate::forms::{check, definitions, diff, registry, FormId, FormRef};
use crate::http::extract::{parse_json, ApiJson, AuthUser, JsonBody};

/// `GET /api/v1/forms`: every form with its versions (any signed-in user:
/// phones need them).
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
pub async fn version_diff(
    state: web::Data<AppState>,
    AuthUser(_me): AuthUser,
    path: web::Path<(FormId, String, String)>,
) -> AppResult<HttpResponse> {
    let (id, a, b) = path.into_inner();
    let cache = state.forms.clone();
    let (from, to) = state
        .db(move |conn| Ok((cache.get(conn, &id, &a)?, cache.get(conn, &id, &b)?)))
        .await?;
    let mut body = json!(diff::diff(&from, &to));
    body["form_id"] = json!(from.meta.id);
    body["from"] = json!(from.meta.version);
    body["to"] = json!(to.meta.version);
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /api/v1/forms/{id}/versions/{version}/validate`: checks data
/// against a version without storing anything, so admins can try forms.
/// Parsed and validated on the CPU pool; the errors are capped like a
/// submission's, with `unlisted_errors` counting the rest.
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
    Ok(HttpResponse::Ok().json(json!({
        "valid": report.is_valid(),
        "errors": report.errors,
        "unlisted_errors": report.unlisted,
    })))
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
pub async fn upload_draft(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<FormId>,
    body: ApiJson<Value>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "change forms")?;
    let source = body.0;
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
    let fields = compiled.fields.len();
    let uploader = me.user_id.clone();
    let draft = state
        .audited(origin, me, "form_draft_uploaded", move |conn| {
            let draft = registry::save_draft(conn, &source, &compiled, &uploader)?;
            let what = Audited::object("form", &draft.form_id).detail(&draft.version);
            Ok((draft, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(json!({
        "form_id": draft.form_id,
        "version": draft.version,
        "fields": fields,
        "uploaded_at": draft.uploaded_at.and_utc(),
    })))
}

/// `GET /api/v1/forms/{id}/draft` (admin): the draft as uploaded.
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
pub async fn publish_draft(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<FormId>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "publish forms")?;
    let publisher = me.user_id.clone();
    let info = state
        .audited(origin, me, "form_published", move |conn| {
            let info = registry::publish_draft(conn, &id, &publisher)?;
            let what = Audited::object("form", &info.form_id).detail(&info.version);
            Ok((info, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(info))
}

/// `POST /api/v1/forms/{id}/versions/{version}/retire` (admin): no new
/// submissions against it; what was submitted stays valid.
pub async fn retire(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    form: web::Path<FormRef>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "retire forms")?;
    let FormRef {
        form_id: id,
        version: v,
    } = form.into_inner();
    let info = state
        .audited(origin, me, "form_retired", move |conn| {
            let info = registry::retire(conn, &id, &v)?;
            let what = Audited::object("form", &info.form_id).detail(&info.version);
            Ok((info, what))
        })
        .await?;
    Ok(HttpResponse::Ok().json(info))
}
