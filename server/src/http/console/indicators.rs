//! The indicators page: KZ Table 1 / BT Annex M for a period and a site,
//! broken down as chosen, as a table and as bar charts (SVG drawn here by
//! `plotters`, inline: presentation attributes only, nothing the CSP
//! blocks), and as CSV. Every report is the API's
//! (`api::indicators::reported`: the same access rule, the same
//! `indicators_reported` audit row) and every value shown is the API's
//! JSON rendering of it (`indicators::json`), so a suppressed count reads
//! as the API writes it (`<5`, `x`), never as the small number.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{Datelike, NaiveDate, Utc};
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;
use serde_json::Value;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{sites, Role};
use crate::error::AppError;
use crate::http::api::indicators::{csv_answer, planned, reported};
use crate::indicators::recent::{self, Counted};
use crate::indicators::{self, ReportQuery, Request, TOTAL};
use crate::programmes::Programmes;

use super::session::WebUser;
use super::{Chrome, WebError};

/// The form as the browser sends it (a GET: bookmarkable). Read from the
/// query string by hand: each chosen breakdown is its own `by=` pair.
#[derive(Debug, Default, Clone)]
pub struct IndicatorForm {
    pub programme: String,
    pub from: String,
    pub to: String,
    pub period: String,
    pub site: String,
    pub by: Vec<String>,
    /// The indicator (or `T-<rule>`) the charts draw.
    pub chart: String,
}

impl IndicatorForm {
    fn parse(query: &str) -> IndicatorForm {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let mut form = IndicatorForm::default();
        for (name, value) in pairs {
            let value = value.trim().to_string();
            match name.as_str() {
                "programme" => form.programme = value,
                "from" => form.from = value,
                "to" => form.to = value,
                "period" => form.period = value,
                "site" => form.site = value,
                "by" if !value.is_empty() => form.by.push(value),
                "chart" => form.chart = value,
                _ => {}
            }
        }
        form
    }

    /// The API's query for this form; `None` until a period is given.
    /// A date the browser sent badly is the API's 422 naming it.
    fn query(&self, format: Option<&str>) -> Result<Option<ReportQuery>, AppError> {
        if self.from.is_empty() && self.to.is_empty() {
            return Ok(None);
        }
        let day = |text: &str, at: &str| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| AppError::invalid_field(at, "a date (YYYY-MM-DD)"))
        };
        let chosen = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        Ok(Some(ReportQuery {
            from: Some(day(&self.from, "/from")?),
            to: Some(day(&self.to, "/to")?),
            period: chosen(&self.period),
            by: chosen(&self.by.join(",")),
            site: chosen(&self.site),
            format: format.map(String::from),
            ..ReportQuery::default()
        }))
    }

    /// This form's query string (for the CSV link).
    fn query_string(&self) -> String {
        let mut pairs = vec![
            ("programme", self.programme.as_str()),
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("period", self.period.as_str()),
            ("site", self.site.as_str()),
        ];
        pairs.extend(self.by.iter().map(|b| ("by", b.as_str())));
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// One line of the table: the API's row, each value as the API gives it.
pub struct Line {
    pub indicator: String,
    pub label: String,
    pub period: String,
    pub by: Vec<String>,
    /// cases, children, numerator, denominator, percent.
    pub cells: Vec<Cell>,
    /// The catalogue key saying why values are hidden.
    pub suppression: Option<&'static str>,
}

pub struct Cell {
    pub text: String,
    pub hidden: bool,
}

pub struct Chart {
    pub title: String,
    pub svg: String,
}

#[derive(Template)]
#[template(path = "indicators.html")]
struct IndicatorsPage {
    chrome: Chrome,
    form: IndicatorForm,
    programmes: Vec<String>,
    /// (code, name, programme).
    sites: Vec<(String, String, String)>,
    /// The chosen programme's breakdowns.
    dimensions: Vec<String>,
    /// (id, label, title) of the report's indicators, for the chart choice.
    items: Vec<(String, String, String)>,
    /// (label, caveat) of the report's indicators that carry one.
    caveats: Vec<(String, String)>,
    suppressed: bool,
    threshold: u64,
    by: Vec<String>,
    lines: Vec<Line>,
    charts: Vec<Chart>,
    csv: Option<String>,
    /// When the count shown was made (programme's zone).
    counted_at: Option<String>,
    /// A newer count is under way (the one shown, if any, is not current).
    counting: bool,
}

/// Only roles the API lets read indicators get the page.
pub fn may_see(role: &str) -> bool {
    matches!(role, "role.coordinator" | "role.analyst" | "role.viewer")
}

fn programme_of(form: &IndicatorForm, sites: &[(String, String, String)]) -> String {
    if !form.programme.is_empty() {
        return form.programme.clone();
    }
    sites.first().map_or("kz".to_string(), |s| s.2.clone())
}

/// `GET /indicators`: the form, and the report once a period is given.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    let me = session.principal.clone();
    crate::auth::policy::indicators(&me)?;
    let mut form = IndicatorForm::parse(req.query_string());
    let only = (me.role != Role::Viewer || !me.site_ids.is_empty()).then(|| me.site_ids.clone());
    let site_list = state
        .db(move |conn| sites::list(conn, only.as_deref()))
        .await?;
    let sites: Vec<(String, String, String)> = site_list
        .into_iter()
        .map(|s| (s.code, s.name, s.programme))
        .collect();
    form.programme = programme_of(&form, &sites);
    let programmes: Vec<String> = sites
        .iter()
        .map(|s| s.2.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let dimensions = Programmes::shipped()
        .get(&form.programme)
        .map(|p| {
            p.indicators
                .dimensions
                .iter()
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut body = IndicatorsPage {
        chrome: Chrome::signed_in(&req, &session),
        programmes,
        sites,
        dimensions,
        items: Vec::new(),
        caveats: Vec::new(),
        suppressed: me.role == Role::Viewer,
        threshold: state.settings.indicator_suppression_threshold,
        by: Vec::new(),
        lines: Vec::new(),
        charts: Vec::new(),
        csv: None,
        counted_at: None,
        counting: false,
        form: form.clone(),
    };
    let Some(query) = form.query(None)? else {
        // First visit: this year so far, by month.
        let today = Utc::now().date_naive();
        body.form.from = NaiveDate::from_ymd_opt(today.year(), 1, 1)
            .unwrap_or(today)
            .to_string();
        body.form.to = today.to_string();
        body.form.period = "month".into();
        return super::page(StatusCode::OK, &body);
    };
    let request = planned(&state, origin, me, form.programme.clone(), query).await?;
    let Some((counted, current)) = counted(&state, &request).await? else {
        // Nothing counted yet: the page says so and comes back by itself.
        body.counting = true;
        return super::page(StatusCode::OK, &body);
    };
    body.counting = !current;
    body.counted_at = Some(local_time_of(&request, counted.at));
    let report = indicators::json(&request, &counted.rows);
    body.suppressed = request.suppressed;
    body.by = request.by.iter().map(|(n, _)| n.clone()).collect();
    body.items = report["indicators"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| (text(&i["id"]), text(&i["label"]), text(&i["title"])))
        .collect();
    body.caveats = report["indicators"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["caveat"].is_string())
        .map(|i| (text(&i["label"]), text(&i["caveat"])))
        .collect();
    body.caveats.dedup();
    if !body.items.iter().any(|i| i.0 == form.chart) {
        body.form.chart = body.items.first().map(|i| i.0.clone()).unwrap_or_default();
    }
    body.lines = lines(&report, &body.by);
    body.charts = charts(&report, &body.form.chart, &body.by, body.chrome.t)?;
    body.csv = Some(format!("/indicators.csv?{}", form.query_string()));
    super::page(StatusCode::OK, &body)
}

/// The report's count for the page, and whether it is current: the last
/// count while current, else a new one if it finishes within
/// `indicator_page_wait_ms`, else the last one (older) while the new one goes on.
/// `None` when nothing was counted yet.
async fn counted(
    state: &web::Data<AppState>,
    request: &Request,
) -> Result<Option<(Arc<Counted>, bool)>, WebError> {
    let programme = request.programme.id.clone();
    let generation = state
        .db(move |conn| recent::generation(conn, &programme))
        .await?;
    let key = recent::key(request);
    let mut lookup = state.recent_reports.look(&key, generation);
    if lookup.must_count {
        let (state, request, key) = (state.clone(), request.clone(), key.clone());
        // On the bounded CPU pool as a heavy job: the page does not wait
        // for it, so nothing else would bound how many run at once.
        actix_web::rt::spawn(async move {
            let counted = state
                .heavy_db(move |conn| Counted::count(conn, &request))
                .await;
            if let Err(err) = &counted {
                tracing::warn!(error = %err, "an indicator report for the console failed");
            }
            state.recent_reports.finish(&key, counted.ok());
        });
    }
    let budget = Duration::from_millis(state.settings.indicator_page_wait_ms);
    Ok(match lookup.wait(budget).await {
        Some(current) => Some((current, true)),
        None => lookup.last.map(|last| (last, false)),
    })
}

/// When a count was made, in the programme's zone, to the second.
fn local_time_of(request: &Request, at: chrono::DateTime<Utc>) -> String {
    at.with_timezone(&request.programme.calendar.time_zone)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `GET /indicators.csv`: the same report as the API's CSV (one renderer).
pub async fn csv(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    let form = IndicatorForm::parse(req.query_string());
    let query = form
        .query(Some("csv"))?
        .ok_or_else(|| AppError::invalid_field("/from", "required (YYYY-MM-DD)"))?;
    let (request, rows) = reported(
        &state,
        origin,
        session.principal.clone(),
        form.programme.clone(),
        query,
    )
    .await?;
    Ok(csv_answer(&request, &rows)?)
}

/// A JSON value as the API wrote it: a number, a suppression mark, or
/// nothing.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn lines(report: &Value, by: &[String]) -> Vec<Line> {
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    rows.iter()
        .map(|row| Line {
            indicator: text(&row["indicator"]),
            label: text(&row["label"]),
            period: text(&row["period"]),
            by: by
                .iter()
                .map(|name| text(&row["by"][name.as_str()]))
                .collect(),
            cells: ["cases", "children", "numerator", "denominator", "percent"]
                .iter()
                .map(|name| Cell {
                    text: text(&row[*name]),
                    hidden: row[*name].is_string(),
                })
                .collect(),
            suppression: match row["suppression"].as_str() {
                Some("primary") => Some("indicators.suppressed_primary"),
                Some("secondary") => Some("indicators.suppressed_secondary"),
                _ => None,
            },
        })
        .collect()
}

/// A bar: its label, its value (`None` when hidden) and what it reads.
type Bar = (String, Option<f64>, String);

/// The charts of `chart` (an indicator or `T-<rule>`): over the periods
/// when there are several (timeliness per rule over months), then one
/// per breakdown, each bar a value of it (the others at `total`).
/// Percentages for ratios and timeliness, cases for counts.
fn charts(
    report: &Value,
    chart: &str,
    by: &[String],
    t: &super::i18n::Catalogue,
) -> Result<Vec<Chart>, AppError> {
    let Some(item) = report["indicators"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["id"] == chart)
    else {
        return Ok(Vec::new());
    };
    let percent = item["kind"] != "count";
    let measure = if percent { "percent" } else { "cases" };
    let rows: Vec<&Value> = report["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["indicator"] == chart)
        .collect();
    let periods: Vec<String> =
        rows.iter()
            .map(|r| text(&r["period"]))
            .fold(Vec::new(), |mut seen, p| {
                if !seen.contains(&p) {
                    seen.push(p);
                }
                seen
            });
    let at_total = |r: &Value, except: Option<&str>| {
        by.iter()
            .filter(|n| Some(n.as_str()) != except)
            .all(|n| r["by"][n.as_str()] == TOTAL)
    };
    let bar = |label: String, r: &Value| -> Bar { (label, r[measure].as_f64(), text(&r[measure])) };
    let what = t.s(if percent {
        "indicators.chart_percent"
    } else {
        "indicators.chart_cases"
    });
    let title = format!(
        "{} {} — {}",
        text(&item["label"]),
        text(&item["title"]),
        what
    );
    let mut out = Vec::new();
    if periods.len() > 1 {
        let bars: Vec<Bar> = rows
            .iter()
            .filter(|r| at_total(r, None))
            .map(|r| bar(text(&r["period"]), r))
            .collect();
        out.push(Chart {
            title: format!("{title} · {}", t.s("indicators.over_periods")),
            svg: bar_chart(&bars, percent)?,
        });
    }
    for name in by {
        let bars: Vec<Bar> = rows
            .iter()
            .filter(|r| at_total(r, Some(name)) && r["by"][name.as_str()] != TOTAL)
            .map(|r| {
                let value = text(&r["by"][name.as_str()]);
                let label = if periods.len() > 1 {
                    format!("{} {value}", text(&r["period"]))
                } else {
                    value
                };
                bar(label, r)
            })
            .collect();
        out.push(Chart {
            title: format!("{title} · {} {name}", t.s("indicators.by")),
            svg: bar_chart(&bars, percent)?,
        });
    }
    Ok(out)
}

/// A bar chart as SVG text. Hidden values have no bar, only their mark.
fn bar_chart(bars: &[Bar], percent: bool) -> Result<String, AppError> {
    let drawing = |e: &dyn std::fmt::Display| AppError::internal(format!("chart: {e}"));
    let mut svg = String::new();
    {
        let width = (120 + 56 * bars.len() as u32).clamp(360, 1100);
        let root = SVGBackend::with_string(&mut svg, (width, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| drawing(&e))?;
        let highest = bars.iter().filter_map(|b| b.1).fold(0.0, f64::max);
        // Counts: at least 0..5, so the axis has whole steps even when
        // every value is hidden (the scale never hints at a hidden one).
        let top = if percent {
            100.0
        } else {
            (highest * 1.15).max(5.0)
        };
        let count = bars.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(44)
            .build_cartesian_2d((0..count).into_segmented(), 0f64..top)
            .map_err(|e| drawing(&e))?;
        let label_of = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                bars.get(*i).map(|b| b.0.clone()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .y_labels(6)
            .x_labels(count)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| drawing(&e))?;
        let bar_colour = RGBColor(0x0b, 0x53, 0x94);
        chart
            .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
                b.1.map(|v| {
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), v),
                        ],
                        bar_colour.filled(),
                    );
                    r.set_margin(0, 0, 6, 6);
                    r
                })
            }))
            .map_err(|e| drawing(&e))?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mark = if percent && b.1.is_some() {
                    format!("{}%", b.2)
                } else {
                    b.2.clone()
                };
                Text::new(
                    mark,
                    (SegmentValue::CenterOf(i), b.1.unwrap_or(0.0) + top * 0.06),
                    ("sans-serif", 15).into_font().color(&BLACK),
                )
            }))
            .map_err(|e| drawing(&e))?;
        root.present().map_err(|e| drawing(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_nothing_the_console_policy_blocks_and_no_hidden_number() {
        let bars = vec![
            ("female".to_string(), Some(12.0), "12".to_string()),
            ("male".to_string(), None, "<5".to_string()),
            ("<b>".to_string(), None, "x".to_string()),
        ];
        let svg = bar_chart(&bars, false).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("style="), "no inline style: {svg}");
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<b>"), "labels are escaped: {svg}");
        assert!(svg.contains("&lt;5"), "the mark, not a number: {svg}");
        assert!(svg.contains("\n12\n</text>"), "{svg}");
    }

    #[test]
    fn a_chart_of_nothing_or_only_hidden_values_is_still_drawn() {
        for bars in [vec![], vec![("male".to_string(), None, "x".to_string())]] {
            for percent in [false, true] {
                assert!(bar_chart(&bars, percent).unwrap().starts_with("<svg"));
            }
        }
        let one = vec![("2026-11".to_string(), Some(33.3), "33.3".to_string())];
        assert!(bar_chart(&one, true).unwrap().contains("33.3%"));
    }

    #[test]
    fn the_form_reads_each_chosen_breakdown() {
        let form = IndicatorForm::parse(
            "programme=kz&from=2026-01-01&to=2026-03-31&by=sex&by=age_band&site=",
        );
        assert_eq!(form.by, ["sex", "age_band"]);
        let query = form.query(Some("csv")).unwrap().unwrap();
        assert_eq!(query.by.as_deref(), Some("sex,age_band"));
        assert_eq!(query.site, None);
        assert!(IndicatorForm::parse("from=2026-13-01&to=x")
            .query(None)
            .is_err());
    }
}
