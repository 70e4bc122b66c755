//! The case list: the reader's cases (a coordinator's sites', a field
//! worker's own), filtered by programme, site, state, worker, overdue,
//! needing an assignee, closed too, or one case number; sorted oldest or
//! newest first or by the next deadline; a page at a time. The read of
//! `GET /api/v1/cases`, audited as `cases_listed`.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{sites, users, Role};
use crate::cases::views::{self, CaseFilter, CaseSort, CaseSummary};
use crate::programmes::Programmes;

use super::session::WebUser;
use super::{Chrome, WebError};

/// The filter form as a browser sends it: every field a string, empty when
/// not chosen.
#[derive(Debug, Default, Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    site: String,
    #[serde(default)]
    worker: String,
    #[serde(default)]
    number: String,
    #[serde(default)]
    programme: String,
    #[serde(default)]
    state: String,
    /// `oldest` (or empty), `newest`, `due`.
    #[serde(default)]
    sort: String,
    overdue: Option<String>,
    needs_assignee: Option<String>,
    include_closed: Option<String>,
    cursor: Option<String>,
}

impl FilterForm {
    fn to_filter(&self) -> CaseFilter {
        let chosen = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        CaseFilter {
            programme: chosen(&self.programme),
            state: chosen(&self.state),
            // An order the page does not offer is the default one.
            sort: Some(match self.sort.as_str() {
                "newest" => CaseSort::Newest,
                "due" => CaseSort::Due,
                _ => CaseSort::Oldest,
            }),
            site: chosen(&self.site),
            assignee: chosen(&self.worker),
            number: chosen(&self.number),
            overdue: self.overdue.as_ref().map(|_| true),
            needs_assignee: self.needs_assignee.as_ref().map(|_| true),
            include_closed: self.include_closed.as_ref().map(|_| true),
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
            limit: Some(50),
        }
    }

    /// The query string of the next page: this filter from `cursor`.
    fn next_page(&self, cursor: &str) -> String {
        let mut pairs = vec![
            ("site", self.site.as_str()),
            ("worker", self.worker.as_str()),
            ("number", self.number.as_str()),
            ("programme", self.programme.as_str()),
            ("state", self.state.as_str()),
            ("sort", self.sort.as_str()),
        ];
        for (name, on) in [
            ("overdue", &self.overdue),
            ("needs_assignee", &self.needs_assignee),
            ("include_closed", &self.include_closed),
        ] {
            if on.is_some() {
                pairs.push((name, "on"));
            }
        }
        pairs.push(("cursor", cursor));
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

pub struct Line {
    pub id: String,
    pub number: String,
    pub state: String,
    pub assigned: Option<String>,
    pub next_due: Option<String>,
    pub overdue: bool,
    pub needs_assignee: bool,
}

#[derive(Template)]
#[template(path = "cases.html")]
struct CasesPage {
    chrome: Chrome,
    form: FilterForm,
    /// (code, name) of the sites the reader may filter by.
    sites: Vec<(String, String)>,
    /// (username, username) of the workers of those sites.
    workers: Vec<String>,
    /// The programmes of those sites, each with its states (id, title).
    programmes: Vec<(String, Vec<(String, String)>)>,
    lines: Vec<Line>,
    next: Option<String>,
}

/// `GET /cases`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    form: web::Query<FilterForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let filter = form.to_filter();
    let (page, site_list, staff) = state
        .read_audited(
            origin,
            session.principal.clone(),
            "cases_listed",
            move |conn, me| {
                let page = views::list(conn, me, &filter, Utc::now())?;
                let only = (me.role != Role::Admin).then_some(me.site_ids.as_slice());
                let site_list = sites::list(conn, only)?;
                let staff = users::list(conn, only)?;
                Ok(((page, site_list, staff), None))
            },
        )
        .await?;
    let names: HashMap<&str, &str> = staff
        .iter()
        .map(|u| (u.id.as_str(), u.username.as_str()))
        .collect();
    let shipped = Programmes::shipped();
    let line = |c: &CaseSummary| Line {
        id: c.id.clone(),
        number: c.number.clone().unwrap_or_else(|| c.id.clone()),
        state: shipped
            .get(&c.programme)
            .and_then(|p| p.state(&c.state))
            .map_or_else(|| c.state.clone(), |s| s.title.clone()),
        assigned: c
            .assigned_to
            .as_deref()
            .map(|id| names.get(id).copied().unwrap_or(id).to_string()),
        next_due: c
            .next_due_at
            .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string()),
        overdue: c.overdue,
        needs_assignee: c.needs_assignee,
    };
    let lines = page.items.iter().map(line).collect();
    let next = page.next_cursor.as_deref().map(|c| form.next_page(c));
    let mut codes: Vec<String> = site_list.iter().map(|s| s.programme.clone()).collect();
    codes.sort();
    codes.dedup();
    let programmes = codes
        .into_iter()
        .filter_map(|code| {
            let states = shipped
                .get(&code)?
                .states
                .iter()
                .map(|s| (s.id.clone(), s.title.clone()))
                .collect();
            Some((code, states))
        })
        .collect();
    let body = CasesPage {
        chrome: Chrome::signed_in(&req, &session),
        programmes,
        sites: site_list.into_iter().map(|s| (s.code, s.name)).collect(),
        workers: staff
            .iter()
            .filter(|u| matches!(u.role, Role::FieldWorker | Role::Coordinator))
            .map(|u| u.username.clone())
            .collect(),
        form,
        lines,
        next,
    };
    super::page(StatusCode::OK, &body)
}
