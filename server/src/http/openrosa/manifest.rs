//! A form's manifest and the media it names: the phone's case list
//! (`cases.csv`, ODK Entities) for every form that picks its case from it.
//! Thin: the list is `sync::case_list`'s; reading it is audited like a sync.

use actix_web::{web, HttpRequest, HttpResponse};
use quick_xml::escape::escape;

use super::{caller, current_forms, no_such_form, Answer, XML};
use crate::app::AppState;
use crate::audit::Origin;
use crate::cases::reconcile::programme_of;
use crate::error::AppError;
use crate::odk::xform::DATASET;
use crate::sync::case_list as entities;

/// `GET …/forms/{formID}/manifest`: the case list for a follow-up form,
/// with the md5 of the list this caller gets now (it changes when their
/// cases, versions or assignments change, so Collect fetches it again);
/// nothing for other forms.
pub(super) async fn manifest(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let caller = caller(&req).await?;
    let form_id = req.match_info().get("form_id").unwrap_or("").to_string();
    let xform = current_forms(&req, &caller.programme)
        .await?
        .into_iter()
        .find(|x| x.form_id == form_id)
        .ok_or_else(no_such_form)?;
    let mut body = String::from("<manifest xmlns=\"http://openrosa.org/xforms/xformsManifest\"");
    if !xform.case_list {
        body.push_str("/>");
    } else {
        let programme = programme_of(&caller.programme)?;
        let who = caller.who.clone();
        let list = state
            .db(move |conn| entities::case_list(conn, &who, &programme))
            .await?;
        let name = entities::file_name();
        body.push_str(&format!(
            "><mediaFile type=\"entityList\"><filename>{name}</filename><hash>md5:{md5}</hash><downloadUrl>{base}/entities/{name}</downloadUrl><integrityUrl>{base}/entities/{DATASET}/integrity</integrityUrl></mediaFile>",
            md5 = list.md5,
            base = escape(&caller.base),
        ));
        body.push_str("</manifest>");
    }
    Ok(HttpResponse::Ok()
        .content_type(XML)
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}

#[derive(serde::Deserialize)]
pub(super) struct IntegrityQuery {
    /// Comma-separated case ids.
    id: Option<String>,
}

/// `GET …/entities/cases/integrity?id=a,b`: which of the cases Collect
/// holds left the caller's list, so Collect drops them from the phone.
/// Says nothing about a case beyond "no longer yours to hold".
pub(super) async fn integrity(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<IntegrityQuery>,
) -> Answer {
    let caller = caller(&req).await?;
    if req.match_info().get("dataset") != Some(DATASET) {
        return Err(AppError::NotFound("no such case list for this programme".into()).into());
    }
    let ids: Vec<String> = query
        .into_inner()
        .id
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    let programme = programme_of(&caller.programme)?;
    let who = caller.who;
    let states = state
        .db(move |conn| entities::deleted(conn, &who, &programme, &ids))
        .await?;
    let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><data><entities>");
    for (id, deleted) in states {
        body.push_str(&format!(
            "<entity id=\"{}\"><deleted>{deleted}</deleted></entity>",
            escape(&id)
        ));
    }
    body.push_str("</entities></data>");
    Ok(HttpResponse::Ok()
        .content_type(XML)
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}

/// `GET …/entities/cases.csv`: the caller's case list. Case content read
/// for a phone: audited as a sync is, by number of cases.
pub(super) async fn entity_list(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
) -> Answer {
    let caller = caller(&req).await?;
    if req.match_info().get("file") != Some(entities::file_name().as_str()) {
        return Err(AppError::NotFound("no such file for this programme".into()).into());
    }
    let programme = programme_of(&caller.programme)?;
    let who = caller.who;
    let reader = who.clone();
    let list = state
        .db(move |conn| entities::case_list(conn, &reader, &programme))
        .await?;
    // Audited as a sync is: by the committer, with its next group.
    if list.cases > 0 {
        let detail = format!("{} cases (ODK case list)", list.cases);
        state
            .committer
            .audit_soon(who, origin, "cases_synced", detail);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(list.csv))
}
