//! Cases, their timelines, deadlines and conflicts: thin handlers over
//! `cases::views` (reads, audited) and `cases::actions` (changes, audited
//! in the same transaction).

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::Items;
use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::Principal;
use crate::cases::actions::{self, ApprovalInput, Assignment, Resolution, SiblingInput};
use crate::cases::children::{DuplicateDecision, DuplicateId, DuplicateStatus};
use crate::cases::conflicts::ConflictId;
use crate::cases::conflicts::ConflictRow;
use crate::cases::views::{self, CaseFilter, CaseSummary, CaseView, DeadlineFilter, Page};
use crate::cases::{break_glass, children, Case, CaseId};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiJson, AuthUser};

/// `GET /api/v1/cases?programme=&site=&state=&assignee=&overdue=&cursor=`
#[utoipa::path(
    get,
    path = "/cases",
    tag = "cases",
    params(CaseFilter),
    responses((status = 200, description = "A page of the cases the caller may read", body = Page<CaseSummary>), (status = 422, description = "A filter names no such site, user or programme", body = Problem, content_type = "application/problem+json")),
)]
pub async fn list(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    filter: web::Query<CaseFilter>,
) -> AppResult<HttpResponse> {
    let page = state
        .read_audited(origin, me, "cases_listed", move |conn, me| {
            Ok((views::list(conn, me, &filter, Utc::now())?, None))
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /api/v1/cases/{id}`: state, facts, deadlines.
#[utoipa::path(
    get,
    path = "/cases/{id}",
    tag = "cases",
    params(("id" = CaseId, Path)),
    responses((status = 200, description = "State, facts, deadlines", body = CaseView), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn show(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
) -> AppResult<HttpResponse> {
    let view = state
        .read_audited(origin, me, "case_read", move |conn, me| {
            let (case, access) = views::readable(conn, me, &id, Utc::now())?;
            let what = Audited::object("case", &case.id).detail(access.as_str());
            Ok((views::view(conn, case, Utc::now())?, Some(what)))
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /api/v1/cases/{id}/timeline`: events in the order they happened,
/// and the deadlines.
#[utoipa::path(
    get,
    path = "/cases/{id}/timeline",
    tag = "cases",
    params(("id" = CaseId, Path)),
    responses((status = 200, description = "Events in the order they happened, and the deadlines", body = views::Timeline), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn timeline(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
) -> AppResult<HttpResponse> {
    let timeline = state
        .read_audited(origin, me, "case_timeline_read", move |conn, me| {
            let (case, access) = views::readable(conn, me, &id, Utc::now())?;
            let what = Audited::object("case", &case.id).detail(access.as_str());
            Ok((views::timeline(conn, &case, Utc::now())?, Some(what)))
        })
        .await?;
    Ok(HttpResponse::Ok().json(timeline))
}

/// `POST /api/v1/cases/{id}/assignment` (coordinator): `{"assignee": id|null}`
#[utoipa::path(
    post,
    path = "/cases/{id}/assignment",
    tag = "cases",
    params(("id" = CaseId, Path)),
    request_body = Assignment,
    responses((status = 200, description = "Assigned; the case as it now stands", body = CaseView), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The case is closed, or the change conflicts with its state", body = Problem, content_type = "application/problem+json"), (status = 422, description = "The assignee may not take this case", body = Problem, content_type = "application/problem+json")),
)]
pub async fn assign(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
    body: ApiJson<Assignment>,
) -> AppResult<HttpResponse> {
    let case = assigned(&state, origin, me, id.into_inner(), body.0).await?;
    view_of(&state, case).await
}

/// A coordinator's assignment, audited as `case_assigned` (the API's and
/// the console's).
pub async fn assigned(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: CaseId,
    assignment: Assignment,
) -> AppResult<Case> {
    state
        .read_audited(origin, me, "case_assigned", move |conn, who| {
            let case = actions::assign(conn, who, &id, &assignment)?;
            let what = Audited::object("case", &case.id).detail(actions::assignment_detail(&case));
            Ok((case, Some(what)))
        })
        .await
}

/// `POST /api/v1/cases/{id}/approvals` (coordinator):
/// `{"subject": "case_plan", "decision": "approved"|"returned", "note"}`
#[utoipa::path(
    post,
    path = "/cases/{id}/approvals",
    tag = "cases",
    params(("id" = CaseId, Path)),
    request_body = ApprovalInput,
    responses((status = 200, description = "Recorded; the case as it now stands", body = CaseView), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The case is closed, or the change conflicts with its state", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Not an approval of this programme, or a field is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn approve(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
    body: ApiJson<ApprovalInput>,
) -> AppResult<HttpResponse> {
    let case = approved(&state, origin, me, id.into_inner(), body.0).await?;
    view_of(&state, case).await
}

/// A coordinator's approval (or return for changes), audited as
/// `case_approval` (the API's and the console's).
pub async fn approved(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: CaseId,
    approval: ApprovalInput,
) -> AppResult<Case> {
    state
        .read_audited(origin, me, "case_approval", move |conn, who| {
            let case = actions::approve(conn, who, &id, &approval)?;
            let what = Audited::object("case", &case.id)
                .detail(format!("{} {}", approval.subject, approval.decision));
            Ok((case, Some(what)))
        })
        .await
}

/// `GET /api/v1/deadlines?status=overdue|due_soon|upcoming&site=&assignee=`
#[utoipa::path(
    get,
    path = "/deadlines",
    tag = "cases",
    params(DeadlineFilter),
    responses((status = 200, description = "Deadlines of the cases the caller may read", body = Items<views::DueItem>), (status = 422, description = "A filter is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn deadlines(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    filter: web::Query<DeadlineFilter>,
) -> AppResult<HttpResponse> {
    let items = state
        .read_audited(origin, me, "deadlines_listed", move |conn, me| {
            Ok((views::due(conn, me, &filter, Utc::now())?, None))
        })
        .await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConflictQuery {
    /// Resolved ones too.
    all: Option<bool>,
}

/// `GET /api/v1/conflicts[?all=true]`
#[utoipa::path(
    get,
    path = "/conflicts",
    tag = "cases",
    params(ConflictQuery),
    responses((status = 200, description = "Conflicts of the caller's sites' cases", body = Items<ConflictRow>)),
)]
pub async fn conflicts(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    query: web::Query<ConflictQuery>,
) -> AppResult<HttpResponse> {
    let all = query.all.unwrap_or(false);
    // Conflicts quote the facts in dispute: case content, so audited.
    let items = state
        .read_audited(origin, me, "conflicts_listed", move |conn, me| {
            Ok((actions::conflicts_for(conn, me, all, 1000)?, None))
        })
        .await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

/// `POST /api/v1/conflicts/{id}/resolution` (coordinator):
/// `{"choice": "submitted"|"other"|"value", "value", "note"}`
#[utoipa::path(
    post,
    path = "/conflicts/{id}/resolution",
    tag = "cases",
    params(("id" = ConflictId, Path)),
    request_body = Resolution,
    responses((status = 200, description = "The conflict, resolved", body = ConflictRow), (status = 404, description = "No such conflict, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already resolved", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Not a valid choice or value", body = Problem, content_type = "application/problem+json")),
)]
pub async fn resolve(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<ConflictId>,
    body: ApiJson<Resolution>,
) -> AppResult<HttpResponse> {
    let resolved = resolved(&state, origin, me, id.into_inner(), body.0).await?;
    Ok(HttpResponse::Ok().json(resolved))
}

/// A coordinator's settling of a conflict, audited as `conflict_resolved`
/// (the API's and the console's).
pub async fn resolved(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: ConflictId,
    resolution: Resolution,
) -> AppResult<ConflictRow> {
    state
        .read_audited(origin, me, "conflict_resolved", move |conn, who| {
            let resolved = actions::resolve(conn, who, &id, &resolution)?;
            let what = Audited::object("conflict", &resolved.id).detail(&resolution.choice);
            Ok((resolved, Some(what)))
        })
        .await
}

/// `POST /api/v1/cases/{id}/break-glass` (coordinator of another site):
/// `{"reason": "…", "minutes": 60}` opens the case to read for a while.
#[utoipa::path(
    post,
    path = "/cases/{id}/break-glass",
    tag = "cases",
    params(("id" = CaseId, Path)),
    request_body = break_glass::Request,
    responses((status = 201, description = "The grant: the case may be read until it expires", body = break_glass::Grant), (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"), (status = 409, description = "A case of the caller's own sites, or a grant already runs", body = Problem, content_type = "application/problem+json"), (status = 422, description = "The reason or the minutes are not acceptable", body = Problem, content_type = "application/problem+json")),
)]
pub async fn break_glass(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
    body: ApiJson<break_glass::Request>,
) -> AppResult<HttpResponse> {
    let max_minutes = state.settings.break_glass_minutes;
    let who = me.clone();
    let grant = state
        .audited(origin, me, "break_glass_opened", move |conn| {
            let grant = break_glass::open(conn, &who, &id, &body.0, max_minutes, Utc::now())?;
            let renewal = if grant.renewal { "; a renewal" } else { "" };
            let what = Audited::object("case", &grant.case_id)
                .detail(format!("until {}{renewal}", grant.expires_at.to_rfc3339()))
                .purpose(&grant.reason);
            Ok((grant, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(grant))
}

/// `GET /api/v1/break-glass` (admins; coordinators for their sites' cases
/// and their own grants): who opened which case, why, until when.
#[utoipa::path(
    get,
    path = "/break-glass",
    tag = "cases",
    responses((status = 200, description = "Break-glass grants, newest first", body = Items<break_glass::Grant>)),
)]
pub async fn break_glass_grants(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
) -> AppResult<HttpResponse> {
    let items = state
        .read_audited(origin, me, "break_glass_listed", move |conn, me| {
            Ok((break_glass::list(conn, me, None, Utc::now())?, None))
        })
        .await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

/// `POST /api/v1/cases/{id}/siblings` (coordinator): `{"case_id": other}`
#[utoipa::path(
    post,
    path = "/cases/{id}/siblings",
    tag = "cases",
    params(("id" = CaseId, Path)),
    request_body = SiblingInput,
    responses((status = 200, description = "Linked; the case as it now stands", body = CaseView), (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The case is closed, or the change conflicts with its state", body = Problem, content_type = "application/problem+json"), (status = 422, description = "The other case is not of this site, or is the same child", body = Problem, content_type = "application/problem+json")),
)]
pub async fn link_siblings(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<CaseId>,
    body: ApiJson<SiblingInput>,
) -> AppResult<HttpResponse> {
    let case = siblings_linked(&state, origin, me, id.into_inner(), body.0).await?;
    view_of(&state, case).await
}

/// A coordinator's link of two children as siblings, audited as
/// `siblings_linked` (the API's and the console's).
pub async fn siblings_linked(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: CaseId,
    sibling: SiblingInput,
) -> AppResult<Case> {
    state
        .read_audited(origin, me, "siblings_linked", move |conn, who| {
            let case = actions::link_siblings(conn, who, &id, &sibling)?;
            let what = Audited::object("case", &case.id).detail(&sibling.case_id);
            Ok((case, Some(what)))
        })
        .await
}

/// The answer to a staff action on a case: the case as it now stands.
async fn view_of(state: &AppState, case: Case) -> AppResult<HttpResponse> {
    let view = state
        .db(move |conn| views::view(conn, case, Utc::now()))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DuplicateQuery {
    /// `open` (default), `linked` or `dismissed`.
    #[param(value_type = Option<DuplicateStatus>)]
    status: Option<String>,
    /// A site's code or id.
    site: Option<String>,
}

/// `GET /api/v1/children/duplicates?status=&site=` (coordinator): pairs of
/// children that may be one, by case number — never by name.
#[utoipa::path(
    get,
    path = "/children/duplicates",
    tag = "cases",
    params(DuplicateQuery),
    responses((status = 200, description = "Pairs of children that may be one, by case number", body = Items<children::Candidate>), (status = 422, description = "Not a status, or no such site", body = Problem, content_type = "application/problem+json")),
)]
pub async fn duplicates(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    query: web::Query<DuplicateQuery>,
) -> AppResult<HttpResponse> {
    let query = query.into_inner();
    let items = state
        .read_audited(origin, me, "duplicates_listed", move |conn, me| {
            let items = children::candidates(
                conn,
                me,
                query.status.as_deref(),
                query.site.as_deref(),
                500,
            )?;
            Ok((items, None))
        })
        .await?;
    Ok(HttpResponse::Ok().json(super::Items::new(items)))
}

/// `POST /api/v1/children/duplicates/{id}/link` and `…/dismiss`
/// (coordinator): the same child — a readmission, or a further referral to
/// the open case — or two children.
#[utoipa::path(
    post,
    path = "/children/duplicates/{id}/{decision}",
    tag = "cases",
    params(("id" = DuplicateId, Path), ("decision" = DuplicateDecision, Path)),
    responses((status = 200, description = "The pair, decided", body = children::Candidate), (status = 404, description = "No such pair, one the caller may not see, or a decision other than link or dismiss", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already decided", body = Problem, content_type = "application/problem+json")),
)]
pub async fn decide_duplicate(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    path: web::Path<(DuplicateId, String)>,
) -> AppResult<HttpResponse> {
    let (id, decision) = path.into_inner();
    let link = match decision.as_str() {
        "link" => true,
        "dismiss" => false,
        _ => return Err(AppError::NotFound("link or dismiss".into())),
    };
    let pair = duplicate_decided(&state, origin, me, id, link).await?;
    Ok(HttpResponse::Ok().json(pair))
}

/// A coordinator's decision on a possible duplicate — the same child
/// (`link`, audited `children_linked`) or two (`duplicate_dismissed`);
/// the API's and the console's.
pub async fn duplicate_decided(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: DuplicateId,
    link: bool,
) -> AppResult<children::Candidate> {
    let action = if link {
        "children_linked"
    } else {
        "duplicate_dismissed"
    };
    state
        .read_audited(origin, me, action, move |conn, who| {
            let pair = if link {
                children::link(conn, who, &id)?
            } else {
                children::dismiss(conn, who, &id)?
            };
            let what = Audited::object("duplicate_candidate", id.as_str());
            Ok((pair, Some(what)))
        })
        .await
}
