//! A report as a tidy long CSV or as JSON (docs/indicators.md, "Reports").
//! Suppressed counts read `<t` (below the threshold) or `x` (hidden).

use serde_json::{json, Map, Value};

use super::{Item, Request, Row, Suppression};
use crate::error::AppResult;
use crate::sheet::{Chunk, Formulas};

/// A count as shown: a number, or the mark that hides it.
enum Shown {
    Number(f64),
    Hidden(String),
    Absent,
}

fn shown(row: &Row, value: Option<f64>, is_count: bool, threshold: u64) -> Shown {
    let Some(v) = value else {
        return Shown::Absent;
    };
    match row.suppression {
        None => Shown::Number(v),
        Some(Suppression::Primary) if is_count && v > 0.0 && (v as u64) < threshold => {
            Shown::Hidden(format!("<{threshold}"))
        }
        Some(Suppression::Primary) if is_count && v == 0.0 => Shown::Number(0.0),
        Some(_) => Shown::Hidden("x".into()),
    }
}

/// The shown values of a row: cases, children, numerator, denominator,
/// percent, median delays (in hours; in days for date-only answers).
fn cells(row: &Row, threshold: u64) -> [Shown; 7] {
    let count = |v: Option<u64>| shown(row, v.map(|v| v as f64), true, threshold);
    [
        count(Some(row.cases)),
        count(Some(row.children)),
        count(row.numerator),
        count(row.denominator),
        shown(row, row.percent(), false, threshold),
        shown(row, row.median_delay_hours, false, threshold),
        shown(row, row.median_delay_days, false, threshold),
    ]
}

fn suppression(row: &Row) -> &'static str {
    match row.suppression {
        None => "",
        Some(Suppression::Primary) => "primary",
        Some(Suppression::Secondary) => "secondary",
    }
}

const COLUMNS: [&str; 8] = [
    "cases",
    "children",
    "numerator",
    "denominator",
    "percent",
    "median_delay_hours",
    "median_delay_days",
    "suppression",
];

/// The report as CSV. Labels and breakdown values go through the one
/// writer that neutralises formulas (`sheet`); counts and
/// percents are numbers, which it leaves as they are.
pub fn csv(request: &Request, rows: &[Row]) -> AppResult<Vec<u8>> {
    let mut out = Chunk::new(Formulas::Escaped);
    let mut header = vec!["indicator", "label", "period"];
    header.extend(request.by.iter().map(|(n, _)| n.as_str()));
    header.extend(COLUMNS);
    header.push("caveat");
    out.record(&header)?;
    for row in rows {
        let item = &request.items[row.item];
        let mut record = vec![
            item.id(),
            item.label().to_string(),
            request.periods[row.period].label.clone(),
        ];
        record.extend(row.values.iter().cloned());
        record.extend(cells(row, request.threshold).into_iter().map(|s| match s {
            Shown::Number(v) => v.to_string(),
            Shown::Hidden(mark) => mark,
            Shown::Absent => String::new(),
        }));
        record.push(suppression(row).to_string());
        // On every row, so a row read alone still says what it rests on.
        record.push(match item {
            Item::Indicator(i) => i.caveat.clone().unwrap_or_default(),
            Item::Timeliness(_) => String::new(),
        });
        out.record(&record)?;
    }
    out.bytes()
}

pub fn json(request: &Request, rows: &[Row]) -> Value {
    let programme = &request.programme;
    let items: Vec<Value> = request
        .items
        .iter()
        .map(|item| match item {
            Item::Indicator(i) => json!({
                "id": i.id, "label": i.label, "title": i.title, "level": i.level,
                "kind": item.kind(), "source": i.source, "by": i.by,
                "unit": i.unit.name(), "caveat": i.caveat,
            }),
            Item::Timeliness(r) => json!({
                "id": item.id(), "label": r.id, "title": format!("Timeliness: {}", r.title),
                "level": "timeliness", "kind": item.kind(), "source": r.source, "by": [],
                "unit": "deadlines", "caveat": null,
            }),
        })
        .collect();
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            let item = &request.items[row.item];
            let by: Map<String, Value> = request
                .by
                .iter()
                .zip(&row.values)
                .map(|((name, _), v)| (name.clone(), Value::String(v.clone())))
                .collect();
            let mut out = Map::new();
            out.insert("indicator".into(), item.id().into());
            out.insert("label".into(), item.label().into());
            out.insert(
                "period".into(),
                request.periods[row.period].label.clone().into(),
            );
            out.insert("by".into(), Value::Object(by));
            for (name, cell) in COLUMNS.iter().zip(cells(row, request.threshold)) {
                let value = match cell {
                    Shown::Number(v) if v.fract() == 0.0 && *name != "percent" => {
                        json!(v as u64)
                    }
                    Shown::Number(v) => json!(v),
                    Shown::Hidden(mark) => json!(mark),
                    Shown::Absent => Value::Null,
                };
                out.insert(name.to_string(), value);
            }
            let mark = suppression(row);
            out.insert(
                "suppression".into(),
                if mark.is_empty() {
                    Value::Null
                } else {
                    mark.into()
                },
            );
            Value::Object(out)
        })
        .collect();
    json!({
        "programme": programme.id,
        "from": request.from,
        "to": request.to,
        "period": request.grain.name(),
        "by": request.by.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "suppressed": request.suppressed,
        "threshold": request.threshold,
        "indicators": items,
        "not_computable": programme.indicators.not_computable,
        "rows": rows,
    })
}
