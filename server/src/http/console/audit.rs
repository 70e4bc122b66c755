//! The audit log, for admins: a page of rows with the API's filters
//! (`api::audit::read`, audited as `audit_read`), older pages, the CSV
//! download (`api::audit::exported`, `audit_exported`, streamed), and the
//! chain's state (`audit::verify_here`, what `casesync audit verify` finds
//! without an anchor).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::app::{AppState, Audited};
use crate::audit::{AuditQuery, AuditRow, Origin};
use crate::auth::policy;
use crate::error::AppError;
use crate::http::api::audit as api_audit;
use crate::http::api::users as api_users;

use super::i18n::Catalogue;
use super::session::WebUser;
use super::{Chrome, WebError};

/// Rows a page shows.
const PAGE_ROWS: &str = "50";

/// Only admins read the log (the header link too).
pub fn may_see(role: &str) -> bool {
    role == "role.admin"
}

/// The filter form as the browser sends it (a GET: bookmarkable).
#[derive(Debug, Default, Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub object_type: String,
    #[serde(default)]
    pub object_id: String,
    #[serde(default)]
    pub cursor: String,
}

impl FilterForm {
    /// The API's query for this form (an empty field is an absent one).
    fn query(&self, paged: bool) -> AuditQuery {
        let given = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        AuditQuery {
            from: given(&self.from),
            to: given(&self.to),
            actor: given(&self.actor),
            action: given(&self.action),
            object_type: given(&self.object_type),
            object_id: given(&self.object_id),
            cursor: given(&self.cursor).filter(|_| paged),
            limit: paged.then(|| PAGE_ROWS.to_string()),
            formula_escape: None,
        }
    }

    /// This filter as a query string, from `cursor` when given.
    fn query_string(&self, cursor: Option<&str>) -> String {
        let mut pairs = vec![
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("actor", self.actor.as_str()),
            ("action", self.action.as_str()),
            ("object_type", self.object_type.as_str()),
            ("object_id", self.object_id.as_str()),
        ];
        pairs.retain(|(_, v)| !v.trim().is_empty());
        if let Some(c) = cursor {
            pairs.push(("cursor", c));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

pub struct Line {
    pub seq: i64,
    pub at: String,
    /// Empty for the server itself (first start, sealing).
    pub actor: String,
    pub role: String,
    pub action: String,
    pub object: String,
    /// The case page, when the row is about a case.
    pub case: Option<String>,
    pub detail: String,
    pub purpose: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    form: FilterForm,
    lines: Vec<Line>,
    next: Option<String>,
    csv: String,
    problem: Option<String>,
}

fn line(row: &AuditRow, names: &HashMap<String, String>) -> Line {
    let object = match (&row.object_type, &row.object_id) {
        // A user by their username, as the reader knows them.
        (Some(t), Some(id)) if t == "user" && names.contains_key(id) => {
            format!("{t} {}", names[id])
        }
        (Some(t), Some(id)) => format!("{t} {id}"),
        (Some(t), None) => t.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => String::new(),
    };
    Line {
        seq: row.seq.unwrap_or_default(),
        at: format!("{} UTC", row.occurred_at.format("%Y-%m-%d %H:%M:%S")),
        actor: row
            .actor_id
            .as_deref()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.to_string()))
            .unwrap_or_default(),
        role: row.actor_role.clone().unwrap_or_default(),
        action: row.action.clone(),
        case: (row.object_type.as_deref() == Some("case"))
            .then(|| row.object_id.clone())
            .flatten(),
        object,
        detail: row.detail.clone().unwrap_or_default(),
        purpose: row.purpose.clone().unwrap_or_default(),
    }
}

/// A filter the API refuses (a bad date, an unknown user), in its words.
fn refusal(t: &Catalogue, e: &AppError) -> Option<(StatusCode, String)> {
    let status = actix_web::ResponseError::status_code(e);
    match e {
        AppError::Validation { errors, detail } | AppError::BadRequest { errors, detail } => {
            let why = errors
                .iter()
                .map(|e| {
                    let key = match e.pointer.trim_start_matches('/') {
                        "from" => "audit.from",
                        "to" => "audit.to",
                        "actor" => "audit.actor",
                        "action" => "audit.action",
                        "object_type" => "audit.object_type",
                        "object_id" => "audit.object_id",
                        _ => "audit.page",
                    };
                    format!("{}: {}", t.s(key), e.message)
                })
                .collect::<Vec<_>>()
                .join("; ");
            Some((status, if why.is_empty() { detail.clone() } else { why }))
        }
        _ => None,
    }
}

/// `GET /audit?from=&to=&actor=&action=&object_type=&object_id=&cursor=`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    form: web::Query<FilterForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let me = session.principal.clone();
    let read = api_audit::read(&state, origin, me.clone(), &form.query(true)).await;
    let (lines, next, problem, status) = match read {
        Ok(page) => {
            let names: HashMap<String, String> = api_users::listed(&state, &me)
                .await?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect();
            let lines = page.items.iter().map(|r| line(r, &names)).collect();
            let next = page
                .next_cursor
                .as_deref()
                .map(|c| form.query_string(Some(c)));
            (lines, next, None, StatusCode::OK)
        }
        Err(e) => match refusal(Catalogue::of(&req), &e) {
            Some((status, why)) => (Vec::new(), None, Some(why), status),
            None => return Err(e.into()),
        },
    };
    let body = AuditPage {
        chrome: Chrome::signed_in(&req, &session),
        csv: format!("/audit.csv?{}", form.query_string(None)),
        form,
        lines,
        next,
        problem,
    };
    super::page(status, &body)
}

/// `GET /audit.csv?…`: the API's export of the same filter, streamed.
pub async fn csv(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    form: web::Query<FilterForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let exported = api_audit::exported(
        &state,
        origin,
        session.principal.clone(),
        &form.query(false),
    )
    .await;
    match exported {
        Ok(res) => Ok(res),
        Err(e) => match refusal(Catalogue::of(&req), &e) {
            Some((status, why)) => {
                let body = AuditPage {
                    chrome: Chrome::signed_in(&req, &session),
                    csv: format!("/audit.csv?{}", form.query_string(None)),
                    form,
                    lines: Vec::new(),
                    next: None,
                    problem: Some(why),
                };
                super::page(status, &body)
            }
            None => Err(e.into()),
        },
    }
}

#[derive(Template)]
#[template(path = "audit_chain.html")]
struct ChainPage {
    chrome: Chrome,
    /// The check running: when and by whom it started, rows checked of
    /// the chain's length then.
    running: Option<(String, String, u64, i64)>,
    last: Option<LastCheck>,
}

/// The last check that finished, as the page shows it.
struct LastCheck {
    started: String,
    finished: String,
    by: String,
    /// Why it could not finish (a database error), else what it found.
    failed: Option<String>,
    intact: bool,
    rows: u64,
    head_seq: i64,
    head_hash: String,
    problems: Vec<String>,
    more_problems: u64,
}

fn utc(t: chrono::NaiveDateTime) -> String {
    format!("{} UTC", t.format("%Y-%m-%d %H:%M:%S"))
}

/// `GET /audit/chain`: the last check of the whole chain (as `casesync
/// audit verify` does, with the server's key and no anchor) — intact, or
/// where it breaks — and the one running, with its progress. The walk
/// reads every row, so it runs in the background (`POST`), never while
/// the page renders.
pub async fn chain(
    req: HttpRequest,
    state: web::Data<AppState>,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    policy::read_audit(&session.principal)?;
    let check = state.chain_check.state();
    let ids: Vec<String> = check
        .running
        .iter()
        .map(|(s, _)| s.by.clone())
        .chain(check.last.iter().map(|d| d.started.by.clone()))
        .collect();
    let names: HashMap<String, String> = if ids.is_empty() {
        HashMap::new()
    } else {
        api_users::listed(&state, &session.principal)
            .await?
            .into_iter()
            .map(|u| (u.id, u.username))
            .collect()
    };
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let last = check.last.map(|done| {
        let (failed, found) = match done.outcome {
            Ok(found) => (None, Some(found)),
            Err(why) => (Some(why), None),
        };
        LastCheck {
            started: utc(done.started.at),
            finished: utc(done.finished_at),
            by: name(&done.started.by),
            failed,
            intact: found.as_ref().is_some_and(|f| f.is_intact()),
            rows: found.as_ref().map_or(0, |f| f.rows),
            head_seq: found.as_ref().map_or(0, |f| f.head_seq),
            head_hash: found
                .as_ref()
                .map_or_else(String::new, |f| f.head_hash.clone()),
            problems: found
                .as_ref()
                .map(|f| f.problems.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            more_problems: found.as_ref().map_or(0, |f| f.more_problems),
        }
    });
    let body = ChainPage {
        chrome: Chrome::signed_in(&req, &session),
        running: check
            .running
            .map(|(s, checked)| (utc(s.at), name(&s.by), checked, s.total)),
        last,
    };
    super::page(StatusCode::OK, &body)
}

/// `POST /audit/chain`: an admin starts a check of the whole chain in the
/// background (one at a time; a second while one runs starts nothing),
/// audited as `audit_chain_check_started`; back to the page, which shows
/// its progress.
pub async fn start_chain_check(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    policy::read_audit(&session.principal)?;
    let check = state.chain_check.clone();
    let pool = state.pool.clone();
    let me = session.principal.clone();
    let by = me.user_id.clone();
    let started = web::block(move || check.start(&pool, &by))
        .await
        .map_err(AppError::from)??;
    if started {
        state
            .audited(origin, me, "audit_chain_check_started", |_| {
                Ok(((), Audited::object("audit_log", "chain")))
            })
            .await?;
    }
    Ok(super::see_other("/audit/chain"))
}
