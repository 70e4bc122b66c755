//! Today: a coordinator's morning. Per site, the deadlines of the reader's
//! cases — overdue (with how late) then due soon — grouped by rule, each
//! rule with its count and its most urgent `PER_RULE` (the full list is the
//! case list sorted by deadline, linked); and for coordinators the queues
//! that wait on them: cases needing a new assignee, held forms, open
//! conflicts, possible duplicate children. Each part is the read of its API
//! route, audited as that route is.

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{sites, users, Principal, Role};
use crate::cases::actions;
use crate::cases::children::{self, Candidate};
use crate::cases::conflicts::ConflictRow;
use crate::cases::fold::Late;
use crate::cases::views::{self, CaseFilter, DueItem, DueStatus, RuleDue};
use crate::ingest::held::{self, HeldForm};

use super::i18n::Catalogue;
use super::session::WebUser;
use super::{local_time, Chrome, WebError};

/// One deadline as the page shows it.
pub struct Row {
    pub case_id: String,
    pub case_number: String,
    pub assigned: Option<String>,
    pub due_local: String,
    /// How late, in the reader's words (`3 days`).
    pub late: Option<String>,
}

/// Deadlines a rule shows at most; its count says how many there are.
/// At 100,000 cases a site has tens of thousands overdue: the page shows
/// the most urgent of each rule and links to the rest (#18).
pub const PER_RULE: i64 = 10;

/// Deadlines a rule counts at most; past it the page says "1000+" (an
/// exact count of tens of thousands read most of the page's time) and
/// the link lists them all.
pub const COUNT_UP_TO: i64 = 1000;

/// The deadlines of one rule.
pub struct RuleGroup {
    pub title: String,
    /// All of them, shown or not (up to `COUNT_UP_TO`).
    pub count: i64,
    /// More than `count`.
    pub more: bool,
    /// The first `PER_RULE`, most overdue (or soonest due) first.
    pub rows: Vec<Row>,
}

/// One site's deadlines.
pub struct SiteDeadlines {
    pub name: String,
    pub overdue: Vec<RuleGroup>,
    pub overdue_count: i64,
    /// At least `overdue_count`: a rule had more than it counts.
    pub overdue_more: bool,
    pub due_soon: Vec<RuleGroup>,
    pub due_soon_count: i64,
    pub due_soon_more: bool,
    /// The site's whole lists: its cases by next deadline (overdue only,
    /// or all).
    pub overdue_link: String,
    pub due_soon_link: String,
}

/// What waits on a coordinator besides deadlines: each list its first
/// `PER_QUEUE` and how many there are.
pub struct Queues {
    pub needs_assignee: Vec<(String, String)>,
    /// More than the first `PER_QUEUE` need one: the case list shows all.
    pub needs_assignee_more: bool,
    pub held: Vec<HeldForm>,
    pub conflicts: Vec<ConflictRow>,
    pub conflicts_count: i64,
    pub duplicates: Vec<Candidate>,
    pub duplicates_count: i64,
    pub pending_case_days: i64,
}

/// Cases needing an assignee, conflicts and possible duplicates Today
/// shows at most (a seeded site had 14,589 possible duplicates).
pub const PER_QUEUE: i64 = 20;

#[derive(Template)]
#[template(path = "today.html")]
struct TodayPage {
    chrome: Chrome,
    /// `None`: the reader's role sees no case deadlines.
    sites: Option<Vec<SiteDeadlines>>,
    queues: Option<Queues>,
}

/// `GET /today`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    let t = Catalogue::of(&req);
    let chrome = Chrome::signed_in(&req, &session);
    let me = session.principal.clone();
    if !matches!(me.role, Role::Coordinator | Role::FieldWorker) {
        let body = TodayPage {
            chrome,
            sites: None,
            queues: None,
        };
        return super::page(StatusCode::OK, &body);
    }
    // The rule, access and audit row of `GET /api/v1/deadlines`, a few a rule.
    let (groups, names, site_names) = state
        .read_audited(
            origin.clone(),
            me.clone(),
            "deadlines_listed",
            move |conn, me| {
                let groups = views::due_by_rule(conn, me, Utc::now(), PER_RULE, COUNT_UP_TO)?;
                let names: HashMap<String, String> = users::list(conn, Some(&me.site_ids))?
                    .into_iter()
                    .map(|u| (u.id, u.username))
                    .collect();
                let site_names: HashMap<String, (String, String)> =
                    sites::list(conn, Some(&me.site_ids))?
                        .into_iter()
                        .map(|s| (s.id, (s.name, s.code)))
                        .collect();
                Ok(((groups, names, site_names), None))
            },
        )
        .await?;
    let queues = if me.role == Role::Coordinator {
        Some(queues(&state, origin, me).await?)
    } else {
        None
    };
    let body = TodayPage {
        chrome,
        sites: Some(by_site(groups, &names, &site_names, t)),
        queues,
    };
    super::page(StatusCode::OK, &body)
}

/// The deadlines per site (by name), each split into overdue and due soon
/// and grouped by rule, the rule with the most overdue first.
fn by_site(
    groups: Vec<RuleDue>,
    names: &HashMap<String, String>,
    site_names: &HashMap<String, (String, String)>,
    t: &Catalogue,
) -> Vec<SiteDeadlines> {
    let row = |item: DueItem| Row {
        late: item.late.map(|late| late_in_words(late, t)),
        assigned: item
            .assigned_to
            .as_ref()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone())),
        case_number: item.case_number.unwrap_or_else(|| item.case_id.clone()),
        case_id: item.case_id,
        due_local: local_time(&item.due_local),
    };
    let mut per_site: BTreeMap<String, SiteDeadlines> = BTreeMap::new();
    let mut groups = groups;
    groups.sort_by_key(|g| g.items.first().map(|i| i.due_at));
    for group in groups {
        let (name, code) = site_names
            .get(&group.site_id)
            .cloned()
            .unwrap_or_else(|| (group.site_id.clone(), group.site_id.clone()));
        let link = |overdue: bool| {
            let mut pairs = vec![("site", code.as_str())];
            if overdue {
                pairs.push(("overdue", "on"));
            }
            pairs.push(("sort", "due"));
            format!(
                "/cases?{}",
                serde_urlencoded::to_string(pairs).unwrap_or_default()
            )
        };
        let site = per_site
            .entry(name.clone())
            .or_insert_with(|| SiteDeadlines {
                name,
                overdue: Vec::new(),
                overdue_count: 0,
                overdue_more: false,
                due_soon: Vec::new(),
                due_soon_count: 0,
                due_soon_more: false,
                overdue_link: link(true),
                due_soon_link: link(false),
            });
        let shown = RuleGroup {
            title: group.title,
            count: group.count,
            more: group.more,
            rows: group.items.into_iter().map(row).collect(),
        };
        if group.status == DueStatus::Overdue {
            site.overdue_count += shown.count;
            site.overdue_more |= shown.more;
            site.overdue.push(shown);
        } else {
            site.due_soon_count += shown.count;
            site.due_soon_more |= shown.more;
            site.due_soon.push(shown);
        }
    }
    per_site.into_values().collect()
}

/// A coordinator's queues, each read as its API route reads it.
async fn queues(
    state: &web::Data<AppState>,
    origin: Origin,
    me: Principal,
) -> Result<Queues, WebError> {
    let days = state.settings.pending_case_days;
    let (needs_assignee, needs_assignee_more, held) = state
        .read_audited(
            origin.clone(),
            me.clone(),
            "cases_listed",
            move |conn, me| {
                let filter = CaseFilter {
                    needs_assignee: Some(true),
                    limit: Some(PER_QUEUE),
                    ..CaseFilter::default()
                };
                let page = views::list(conn, me, &filter, Utc::now())?;
                let more = page.next_cursor.is_some();
                let cases = page
                    .items
                    .into_iter()
                    .map(|c| (c.number.clone().unwrap_or_else(|| c.id.clone()), c.id))
                    .collect();
                // As `GET /submissions/held` for all the coordinator's sites.
                let held = held::list(conn, &me.site_ids, days)?;
                Ok(((cases, more, held), None))
            },
        )
        .await?;
    let (conflicts, conflicts_count) = state
        .read_audited(
            origin.clone(),
            me.clone(),
            "conflicts_listed",
            |conn, me| {
                let count = actions::conflicts_count(conn, me, false)?;
                Ok((
                    (actions::conflicts_for(conn, me, false, PER_QUEUE)?, count),
                    None,
                ))
            },
        )
        .await?;
    let (duplicates, duplicates_count) = state
        .read_audited(origin, me, "duplicates_listed", |conn, me| {
            let count = children::candidates_count(conn, me, None, None)?;
            let first = children::candidates(conn, me, None, None, PER_QUEUE)?;
            Ok(((first, count), None))
        })
        .await?;
    Ok(Queues {
        needs_assignee,
        needs_assignee_more,
        held,
        conflicts,
        conflicts_count,
        duplicates,
        duplicates_count,
        pending_case_days: days,
    })
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
