//! Access to the case file by the child, parents or legal representative
//! (KZ 10.5) and the family's copy of meeting minutes (8.7.22(d)): thin
//! handlers over `privacy::access_requests`, each audited in its transaction.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::Items;
use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::cases::{views, CaseId};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiJson, AuthUser};
use crate::privacy::access_requests::{self, NewRequest, Review};
use crate::privacy::AccessRequestId;

/// `POST /api/v1/cases/{id}/access-requests` (assigned worker, coordinator):
/// `{"requester": "child"|"parent"|"legal_representative", "received_on"}`
#[utoipa::path(
    post,
    path = "/cases/{id}/access-requests",
    tag = "privacy",
    params(("id" = CaseId, Path)),
    request_body = NewRequest,
    responses((status = 201, description = "Recorded", body = access_requests::AccessRequest), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A field is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn create(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
    body: ApiJson<NewRequest>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let request = state
        .audited(origin, me, "access_request_recorded", move |conn| {
            let request = access_requests::record(conn, &who, &id, &body.0, Utc::now())?;
            let what = Audited::object("access_request", &request.id)
                .detail(format!("case {}; {}", request.case_id, request.requester));
            Ok((request, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(request))
}

/// `GET /api/v1/cases/{id}/access-requests` (whoever may read the case).
#[utoipa::path(
    get,
    path = "/cases/{id}/access-requests",
    tag = "privacy",
    params(("id" = CaseId, Path)),
    responses((status = 200, description = "The case's access requests", body = Items<access_requests::AccessRequest>), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn list(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
) -> AppResult<HttpResponse> {
    let items = state
        .read_audited(origin, me, "access_requests_listed", move |conn, me| {
            let (case, access) = views::readable(conn, me, &id, Utc::now())?;
            let what = Audited::object("case", &case.id).detail(access.as_str());
            Ok((access_requests::list(conn, &case)?, Some(what)))
        })
        .await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

/// `POST /api/v1/access-requests/{id}/review` (coordinator of the case's
/// site): `{"decision": "approved"|"refused", "best_interests_reasoning",
/// "redactions": [{"instance_id", "pointer", "reason"}]}`
#[utoipa::path(
    post,
    path = "/access-requests/{id}/review",
    tag = "privacy",
    params(("id" = AccessRequestId, Path)),
    request_body = Review,
    responses((status = 200, description = "Reviewed", body = access_requests::AccessRequest), (status = 404, description = "No such request, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already reviewed", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A field or redaction is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn review(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<AccessRequestId>,
    body: ApiJson<Review>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let request = state
        .audited(origin, me, "access_request_reviewed", move |conn| {
            let request = access_requests::review(conn, &who, &id, &body.0, Utc::now())?;
            let what = Audited::object("access_request", &request.id).detail(format!(
                "{}; {} redactions",
                request.status,
                request.redactions.len()
            ));
            Ok((request, what))
        })
        .await?;
    Ok(HttpResponse::Ok().json(request))
}

/// `GET /api/v1/access-requests/{id}/copy` (assigned worker, coordinator):
/// the redacted copy of an approved request; built now, never stored.
#[utoipa::path(
    get,
    path = "/access-requests/{id}/copy",
    tag = "privacy",
    params(("id" = AccessRequestId, Path)),
    responses((status = 200, description = "The case file as the requester receives it", body = access_requests::CaseCopy), (status = 404, description = "No such request, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request is not approved", body = Problem, content_type = "application/problem+json")),
)]
pub async fn copy(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<AccessRequestId>,
) -> AppResult<HttpResponse> {
    let forms = state.forms.clone();
    let copy = state
        .read_audited(origin, me, "access_copy_produced", move |conn, me| {
            let copy = access_requests::produce_copy(conn, &forms, me, &id, Utc::now())?;
            let what = Audited::object("access_request", &copy.access_request_id).detail(format!(
                "for {}; {} submissions; {} values redacted",
                copy.requester,
                copy.submissions.len(),
                copy.redacted_values
            ));
            Ok((copy, Some(what)))
        })
        .await?;
    Ok(HttpResponse::Ok().json(copy))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FamilyCopyQuery {
    /// Who asked for it: `child`, `parent` or `legal_representative`.
    #[param(value_type = Option<access_requests::Requester>)]
    requested_by: Option<String>,
}

/// `GET /api/v1/submissions/{instance_id}/family-copy[?requested_by=]`
/// (assigned worker, coordinator): meeting minutes without their
/// professional discussion (8.7.22(d), P8).
#[utoipa::path(
    get,
    path = "/submissions/{instance_id}/family-copy",
    tag = "privacy",
    params(("instance_id" = uuid::Uuid, Path), FamilyCopyQuery),
    responses((status = 200, description = "Meeting minutes without their professional discussion", body = access_requests::MinutesCopy), (status = 404, description = "No such minutes, or minutes the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Not a requester", body = Problem, content_type = "application/problem+json")),
)]
pub async fn family_copy(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    instance_id: web::Path<uuid::Uuid>,
    query: web::Query<FamilyCopyQuery>,
) -> AppResult<HttpResponse> {
    let requested_by = query.into_inner().requested_by;
    if let Some(by) = requested_by.as_deref() {
        if !["child", "parent", "legal_representative"].contains(&by) {
            return Err(AppError::invalid_field(
                "/requested_by",
                "must be child, parent or legal_representative",
            ));
        }
    }
    let forms = state.forms.clone();
    let copy = state
        .read_audited(origin, me, "minutes_family_copy", move |conn, me| {
            let copy = access_requests::minutes_copy(conn, &forms, me, &instance_id.to_string())?;
            let what = Audited::object("submission", &copy.minutes.instance_id).detail(format!(
                "{} for {}",
                copy.minutes.form_id,
                requested_by.as_deref().unwrap_or("the family")
            ));
            Ok((copy, Some(what)))
        })
        .await?;
    Ok(HttpResponse::Ok().json(copy))
}
