//! The indicator engine: counts the manuals' monitoring indicators
//! (`programmes::indicators`, docs/indicators.md) over the folded cases,
//! broken down and, for viewers and publishable reports, with small counts
//! suppressed. Aggregates only: no case is ever in a report.

mod count;
pub mod periods;
pub mod recent;
mod render;
mod suppress;

use std::sync::Arc;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::auth::{sites, Principal};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::indicators::{Dimension, Indicator};
use crate::programmes::{DeadlineRule, Programme, Programmes};
pub use periods::{Grain, Period};
pub use recent::Recent;
pub use render::{csv, json};

/// How a report is answered: `json` (the default) or `csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
}

/// The query of `GET /indicators/{programme}` and `casesync indicators`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// First day counted.
    pub from: Option<NaiveDate>,
    /// Last day counted.
    pub to: Option<NaiveDate>,
    /// `range` (default), `month`, `quarter` or `year`.
    pub period: Option<String>,
    /// Comma-separated breakdowns.
    pub by: Option<String>,
    /// Comma-separated indicator ids.
    pub indicator: Option<String>,
    /// Deadline-timeliness indicators too.
    pub timeliness: Option<bool>,
    /// A site's code.
    pub site: Option<String>,
    /// Hide small counts (always so for viewers).
    pub suppress: Option<bool>,
    /// `json` (default) or `csv`.
    #[param(value_type = Option<ReportFormat>)]
    pub format: Option<String>,
}

/// Who asks: the sites they may count, and whether counts must be
/// suppressed whatever they ask.
#[derive(Debug, Clone)]
pub struct Audience {
    /// `None`: every site of the programme.
    pub site_ids: Option<Vec<String>>,
    pub always_suppressed: bool,
}

impl Audience {
    /// Coordinators and analysts: their sites. Viewers: national level
    /// (their sites if they have any), suppressed. Nobody else.
    pub fn of(who: &Principal) -> AppResult<Audience> {
        let (site_ids, always_suppressed) = crate::auth::policy::indicators(who)?;
        Ok(Audience {
            site_ids,
            always_suppressed,
        })
    }

    /// The server's own shell (`casesync indicators`).
    pub fn shell() -> Audience {
        Audience {
            site_ids: None,
            always_suppressed: false,
        }
    }
}

/// One line of the report's index: an indicator of the programme, or the
/// timeliness of one of its deadline rules.
// A report holds a few dozen items, built once: boxing the larger variant
// would save nothing worth the indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Item {
    Indicator(Indicator),
    Timeliness(DeadlineRule),
}

impl Item {
    pub fn id(&self) -> String {
        match self {
            Item::Indicator(i) => i.id.clone(),
            Item::Timeliness(r) => format!("T-{}", r.id),
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Item::Indicator(i) => &i.label,
            Item::Timeliness(r) => &r.id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Item::Indicator(i) if i.ratio.is_some() => "percentage",
            Item::Indicator(_) => "count",
            Item::Timeliness(_) => "timeliness",
        }
    }
}

/// A report, checked and ready to count.
#[derive(Debug, Clone)]
pub struct Request {
    pub programme: Arc<Programme>,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub grain: Grain,
    pub periods: Vec<Period>,
    pub by: Vec<(String, Dimension)>,
    pub items: Vec<Item>,
    pub site_ids: Vec<String>,
    /// Site id → code, for the `site` breakdown.
    pub site_codes: std::collections::HashMap<String, String>,
    pub suppressed: bool,
    pub threshold: u64,
}

const MAX_BREAKDOWNS: usize = 3;

fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Checks `query` for `programme` and `audience`; every mistake is a 400
/// naming the parameter.
pub fn plan(
    conn: &mut DbConnection,
    audience: &Audience,
    programme: &str,
    query: &ReportQuery,
    threshold: u64,
) -> AppResult<Request> {
    let programme = Programmes::shipped()
        .get(programme)
        .cloned()
        .ok_or_else(|| AppError::NotFound(format!("no programme {programme:?}")))?;
    let from = query
        .from
        .ok_or_else(|| AppError::invalid_field("/from", "required (YYYY-MM-DD)"))?;
    let to = query
        .to
        .ok_or_else(|| AppError::invalid_field("/to", "required (YYYY-MM-DD)"))?;
    let grain = Grain::parse(query.period.as_deref())?;
    let periods = periods::split(from, to, grain)?;
    let catalogue = &programme.indicators;

    let names = list(query.by.as_deref());
    if names.len() > MAX_BREAKDOWNS {
        return Err(AppError::invalid_field(
            "/by",
            format!("at most {MAX_BREAKDOWNS} breakdowns"),
        ));
    }
    let mut by = Vec::new();
    for name in names {
        let dimension = catalogue.dimension(&name).ok_or_else(|| {
            let known: Vec<&str> = catalogue
                .dimensions
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            AppError::invalid_field(
                "/by",
                format!("unknown breakdown {name:?}; one of {}", known.join(", ")),
            )
        })?;
        if by.iter().any(|(n, _)| n == &name) {
            return Err(AppError::invalid_field("/by", format!("{name:?} twice")));
        }
        by.push((name, dimension.clone()));
    }

    let mut items: Vec<Item> = catalogue
        .list
        .iter()
        .cloned()
        .map(Item::Indicator)
        .collect();
    if query.timeliness != Some(false) {
        items.extend(programme.deadlines.iter().cloned().map(Item::Timeliness));
    }
    let wanted = list(query.indicator.as_deref());
    if !wanted.is_empty() {
        for id in &wanted {
            if !items.iter().any(|i| &i.id() == id) {
                return Err(AppError::invalid_field(
                    "/indicator",
                    format!(
                        "no indicator {id:?} in {} (timeliness ones are T-<rule>)",
                        programme.id
                    ),
                ));
            }
        }
        items.retain(|i| wanted.contains(&i.id()));
    }

    let all_sites = sites::list(conn, None)?;
    let mut site_ids: Vec<String> = all_sites
        .iter()
        .filter(|s| s.programme == programme.id)
        .filter(|s| {
            audience
                .site_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&s.id))
        })
        .map(|s| s.id.clone())
        .collect();
    if let Some(code) = &query.site {
        let site = all_sites
            .iter()
            .find(|s| &s.code == code || &s.id == code)
            .ok_or_else(|| AppError::invalid_field("/site", "no such site"))?;
        if !site_ids.contains(&site.id) {
            return Err(AppError::Forbidden("not one of your sites".into()));
        }
        site_ids = vec![site.id.clone()];
    }
    Ok(Request {
        from,
        to,
        grain,
        periods,
        by,
        items,
        site_ids,
        site_codes: all_sites.into_iter().map(|s| (s.id, s.code)).collect(),
        suppressed: audience.always_suppressed || query.suppress == Some(true),
        threshold,
        programme,
    })
}

/// What the audit log says of a report (no counts: parameters only).
pub fn describe(request: &Request) -> String {
    let by: Vec<&str> = request.by.iter().map(|(n, _)| n.as_str()).collect();
    format!(
        "{}..{} by {} per {}; {} indicators; {} sites{}",
        request.from,
        request.to,
        if by.is_empty() {
            "-".to_string()
        } else {
            by.join(",")
        },
        request.grain.name(),
        request.items.len(),
        request.site_ids.len(),
        if request.suppressed {
            "; suppressed"
        } else {
            ""
        },
    )
}

/// One cell of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Index into `Request::items`.
    pub item: usize,
    /// Index into `Request::periods`.
    pub period: usize,
    /// One per breakdown; `total` for all values.
    pub values: Vec<String>,
    pub cases: u64,
    pub children: u64,
    pub numerator: Option<u64>,
    pub denominator: Option<u64>,
    /// Median lateness of the deadlines met late at a time of day.
    pub median_delay_hours: Option<f64>,
    /// Median lateness, in local days, of those met late by a date-only
    /// answer (a plan dated the day after its due day: 1).
    pub median_delay_days: Option<f64>,
    pub suppression: Option<Suppression>,
}

impl Row {
    pub fn percent(&self) -> Option<f64> {
        let (n, d) = (self.numerator?, self.denominator?);
        (d > 0).then(|| (1000.0 * n as f64 / d as f64).round() / 10.0)
    }

    /// Every count of the cell (what suppression looks at).
    fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        [
            Some(self.cases),
            Some(self.children),
            self.numerator,
            self.denominator,
        ]
        .into_iter()
        .flatten()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// A count below the threshold.
    Primary,
    /// Hidden so a primary one cannot be recovered by subtraction.
    Secondary,
}

/// The value of a breakdown meaning "all values".
pub const TOTAL: &str = "total";
/// The value of a breakdown when the case has no answer.
pub const UNKNOWN: &str = "unknown";

/// Counts `request`: the rows of the report, suppressed if asked.
pub fn report(conn: &mut DbConnection, request: &Request) -> AppResult<Vec<Row>> {
    let mut rows = count::count(conn, request, chrono::Utc::now())?;
    if request.suppressed {
        suppress::suppress(&mut rows, request.by.len(), request.threshold);
    }
    Ok(rows)
}
