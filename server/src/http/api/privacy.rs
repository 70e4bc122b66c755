//! Consents and the disclosure log: thin handlers over `privacy::*`, each
//! read and change audited.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::Items;
use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::cases::CaseId;
use crate::error::{AppResult, Problem};
use crate::http::extract::{ApiJson, AuthUser};
use crate::privacy::consents::{self, ConsentId, NewConsent, Withdrawal};
use crate::privacy::disclosures::{self, Share};

/// `GET /api/v1/cases/{id}/consents`: who consented to what, and who
/// withdrew (those who may read the case).
#[utoipa::path(
    get,
    path = "/cases/{id}/consents",
    tag = "privacy",
    params(("id" = CaseId, Path)),
    responses((status = 200, description = "Who consented to what, and who withdrew", body = Items<consents::ConsentView>), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn list_consents(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
) -> AppResult<HttpResponse> {
    let items = consents_read(&state, origin, me, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

/// The consents of case `id` for `me`, audited `consents_read` (the API's
/// list, and the console's disclosure form).
pub(crate) async fn consents_read(
    state: &AppState,
    origin: Origin,
    me: crate::auth::Principal,
    id: CaseId,
) -> AppResult<Vec<consents::ConsentView>> {
    state
        .read_audited(origin, me, "consents_read", move |conn, me| {
            let items = consents::list(conn, me, &id, Utc::now())?;
            Ok((items, Some(Audited::object("case", id.as_str()))))
        })
        .await
}

/// `POST /api/v1/cases/{id}/consents` (the assigned worker or a
/// coordinator of the case's site): `{"subject", "kind", "medium",
/// "scopes": [...], "given_on", "recipient", "instance_id"}`
#[utoipa::path(
    post,
    path = "/cases/{id}/consents",
    tag = "privacy",
    params(("id" = CaseId, Path)),
    request_body = NewConsent,
    responses((status = 201, description = "Recorded", body = consents::ConsentView), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A field is not valid (each named)", body = Problem, content_type = "application/problem+json")),
)]
pub async fn record_consent(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
    body: ApiJson<NewConsent>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let consent = state
        .audited(origin, me, "consent_recorded", move |conn| {
            let consent = consents::record(conn, &who, &id, &body.0, Utc::now())?;
            let what = Audited::object("consent", &consent.id).detail(format!(
                "case {}: {}",
                consent.case_id,
                consent.scopes.join(" ")
            ));
            Ok((consent, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(consent))
}

/// `POST /api/v1/consents/{id}/withdrawal`: `{"reason", "withdrawn_on"}`;
/// honoured from now on.
#[utoipa::path(
    post,
    path = "/consents/{id}/withdrawal",
    tag = "privacy",
    params(("id" = ConsentId, Path)),
    request_body = Withdrawal,
    responses((status = 200, description = "The record, withdrawn", body = consents::ConsentView), (status = 404, description = "No such consent, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already withdrawn", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A field is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn withdraw_consent(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<ConsentId>,
    body: ApiJson<Withdrawal>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let consent = state
        .audited(origin, me, "consent_withdrawn", move |conn| {
            let consent = consents::withdraw(conn, &who, &id, &body.0, Utc::now())?;
            Ok((consent, Audited::object("consent", id.as_str())))
        })
        .await?;
    Ok(HttpResponse::Ok().json(consent))
}

/// `POST /api/v1/cases/{id}/disclosures`: a share made outside the server,
/// on a legal basis, logged like an identifying export.
#[utoipa::path(
    post,
    path = "/cases/{id}/disclosures",
    tag = "privacy",
    params(("id" = CaseId, Path)),
    request_body = Share,
    responses((status = 201, description = "The logged disclosure", body = disclosures::Disclosure), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Missing or invalid terms (each named)", body = Problem, content_type = "application/problem+json")),
)]
pub async fn record_share(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
    body: ApiJson<Share>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let disclosure = state
        .audited(origin, me, "disclosure_recorded", move |conn| {
            let disclosure = disclosures::share(conn, &who, &id, &body.0, Utc::now())?;
            let what = Audited::object("case", id.as_str())
                .detail(format!(
                    "disclosure {} ({})",
                    disclosure.id, disclosure.legal_basis
                ))
                .purpose(&disclosure.purpose);
            Ok((disclosure, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(disclosure))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DisclosureQuery {
    /// One case's disclosures.
    case: Option<String>,
}

/// `GET /api/v1/disclosures[?case=]`: the disclosure log (admins; the
/// coordinators of the sites whose data went).
#[utoipa::path(
    get,
    path = "/disclosures",
    tag = "privacy",
    params(DisclosureQuery),
    responses((status = 200, description = "The disclosure log, newest first", body = Items<disclosures::Disclosure>), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn list_disclosures(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    query: web::Query<DisclosureQuery>,
) -> AppResult<HttpResponse> {
    let items = state
        .read_audited(origin, me, "disclosures_read", move |conn, me| {
            Ok((disclosures::list(conn, me, query.case.as_deref())?, None))
        })
        .await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}
