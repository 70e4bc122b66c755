//! Consents and the disclosure log: thin handlers over `privacy::*`, each
//! read and change audited.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::error::AppResult;
use crate::http::extract::{ApiJson, AuthUser};
use crate::cases::CaseId;
use crate::privacy::consents::{self, ConsentId, NewConsent, Withdrawal};
use crate::privacy::disclosures::{self, Share};

/// `GET /api/v1/cases/{id}/consents`: who consented to what, and who
/// withdrew (those who may read the case).
pub async fn list_consents(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
) -> AppResult<HttpResponse> {
    let items = state
        .read_audited(origin, me, "consents_read", move |conn, me| {
            let items = consents::list(conn, me, &id, Utc::now())?;
            Ok((items, Some(Audited::object("case", id.as_str()))))
        })
        .await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

/// `POST /api/v1/cases/{id}/consents` (the assigned worker or a
/// coordinator of the case's site): `{"subject", "kind", "medium",
/// "scopes": [...], "given_on", "recipient", "instance_id"}`
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureQuery {
    case: Option<String>,
}

/// `GET /api/v1/disclosures[?case=]`: the disclosure log (admins; the
/// coordinators of the sites whose data went).
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
