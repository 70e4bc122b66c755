//! Today: a coordinator's morning — the deadlines of their sites' cases,
//! overdue first, then due soon, each with its case and worker.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{users, Role};
use crate::cases::fold::Late;
use crate::cases::views::{self, DeadlineFilter, DueItem};

use super::i18n::Catalogue;
use super::session::WebUser;
use super::{local_time, Chrome, WebError};

/// One deadline as the page shows it.
pub struct Row {
    pub case_id: String,
    pub case_number: String,
    pub title: String,
    pub assigned: Option<String>,
    pub due_local: String,
    /// How late, in the reader's words (`3 days`).
    pub late: Option<String>,
}

#[derive(Template)]
#[template(path = "today.html")]
struct TodayPage {
    chrome: Chrome,
    /// `None`: the reader's role sees no case deadlines.
    overdue: Option<Vec<Row>>,
    due_soon: Vec<Row>,
}

/// `GET /today`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    let t = Catalogue::of(&req);
    let chrome = Chrome::signed_in(t, &session);
    if matches!(
        session.principal.role,
        Role::Analyst | Role::Viewer | Role::Admin
    ) {
        let body = TodayPage {
            chrome,
            overdue: None,
            due_soon: Vec::new(),
        };
        return super::page(StatusCode::OK, &body);
    }
    // The same read, access rule and audit row as `GET /api/v1/deadlines`.
    let (items, names) = state
        .read_audited(
            origin,
            session.principal.clone(),
            "deadlines_listed",
            move |conn, me| {
                let items = views::due(conn, me, &DeadlineFilter::default(), Utc::now())?;
                let names: HashMap<String, String> = users::list(conn, Some(&me.site_ids))?
                    .into_iter()
                    .map(|u| (u.id, u.username))
                    .collect();
                Ok(((items, names), None))
            },
        )
        .await?;
    let row = |item: DueItem| Row {
        late: item.late.map(|late| late_in_words(late, t)),
        assigned: item
            .assigned_to
            .as_ref()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone())),
        case_number: item.case_number.unwrap_or_else(|| item.case_id.clone()),
        case_id: item.case_id,
        title: item.title,
        due_local: local_time(&item.due_local),
    };
    let (overdue, due_soon): (Vec<DueItem>, Vec<DueItem>) =
        items.into_iter().partition(|i| i.late.is_some());
    let body = TodayPage {
        chrome,
        overdue: Some(overdue.into_iter().map(row).collect()),
        due_soon: due_soon.into_iter().map(row).collect(),
    };
    super::page(StatusCode::OK, &body)
}

/// How late, for a reader: days once it is two days or more, whichever
/// unit the rule counts in.
pub(super) fn late_in_words(late: Late, t: &Catalogue) -> String {
    match late {
        Late::Days(days) => format!("{days} {}", t.s("late.days")),
        Late::Hours(hours) if hours >= 48.0 => {
            format!("{} {}", (hours / 24.0).floor(), t.s("late.days"))
        }
        Late::Hours(hours) => format!("{hours:.1} {}", t.s("late.hours")),
    }
}
