//! Reporting periods: the range a report covers, cut into months, quarters
//! or years (local days of the programme's time zone, both ends inclusive).

use chrono::{Datelike, Months, NaiveDate};

use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Range,
    Month,
    Quarter,
    Year,
}

impl Grain {
    pub fn parse(text: Option<&str>) -> AppResult<Grain> {
        match text.unwrap_or("range") {
            "range" => Ok(Grain::Range),
            "month" => Ok(Grain::Month),
            "quarter" => Ok(Grain::Quarter),
            "year" => Ok(Grain::Year),
            _ => Err(AppError::invalid_field(
                "/period",
                "range, month, quarter or year",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Grain::Range => "range",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub label: String,
    pub first: NaiveDate,
    pub last: NaiveDate,
}

/// Longest report: 50 years of months would still be fine, but a typo in a
/// year should not produce a million empty rows.
const MAX_PERIODS: usize = 600;

/// `from`..=`to` cut by `grain`; the first and last periods are clipped.
pub fn split(from: NaiveDate, to: NaiveDate, grain: Grain) -> AppResult<Vec<Period>> {
    if to < from {
        return Err(AppError::invalid_field("/to", "is before from"));
    }
    if grain == Grain::Range {
        return Ok(vec![Period {
            label: format!("{from}..{to}"),
            first: from,
            last: to,
        }]);
    }
    let months = match grain {
        Grain::Month => 1,
        Grain::Quarter => 3,
        _ => 12,
    };
    // The calendar period holding `from`.
    let mut start = NaiveDate::from_ymd_opt(
        from.year(),
        match grain {
            Grain::Year => 1,
            _ => (from.month0() / months) * months + 1,
        },
        1,
    )
    .expect("first of a month");
    let mut out = Vec::new();
    while start <= to {
        let next = start
            .checked_add_months(Months::new(months))
            .ok_or_else(|| AppError::invalid_field("/to", "too far ahead"))?;
        let label = match grain {
            Grain::Month => start.format("%Y-%m").to_string(),
            Grain::Quarter => format!("{}-Q{}", start.year(), start.month0() / 3 + 1),
            _ => start.year().to_string(),
        };
        out.push(Period {
            label,
            first: start.max(from),
            last: next.pred_opt().expect("a day before").min(to),
        });
        if out.len() > MAX_PERIODS {
            return Err(AppError::invalid_field(
                "/period",
                format!("more than {MAX_PERIODS} periods: choose a coarser period"),
            ));
        }
        start = next;
    }
    Ok(out)
}

/// The period holding `day`, if any (`periods` sorted, not overlapping).
pub fn index_of(periods: &[Period], day: NaiveDate) -> Option<usize> {
    let i = periods.partition_point(|p| p.last < day);
    periods.get(i).filter(|p| p.first <= day).map(|_| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn quarters_are_cut_at_the_range_ends() {
        let periods = split(d("2026-02-15"), d("2026-08-03"), Grain::Quarter).unwrap();
        let labels: Vec<_> = periods
            .iter()
            .map(|p| (p.label.as_str(), p.first.to_string(), p.last.to_string()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("2026-Q1", "2026-02-15".into(), "2026-03-31".into()),
                ("2026-Q2", "2026-04-01".into(), "2026-06-30".into()),
                ("2026-Q3", "2026-07-01".into(), "2026-08-03".into()),
            ]
        );
        assert_eq!(index_of(&periods, d("2026-02-14")), None);
        assert_eq!(index_of(&periods, d("2026-03-31")), Some(0));
        assert_eq!(index_of(&periods, d("2026-04-01")), Some(1));
        assert_eq!(index_of(&periods, d("2026-08-04")), None);
    }

    #[test]
    fn months_years_and_a_single_range() {
        let months = split(d("2025-12-01"), d("2026-02-28"), Grain::Month).unwrap();
        assert_eq!(
            months.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(),
            ["2025-12", "2026-01", "2026-02"]
        );
        let years = split(d("2025-06-01"), d("2026-02-28"), Grain::Year).unwrap();
        assert_eq!(years[0].label, "2025");
        assert_eq!(years[1].last, d("2026-02-28"));
        let range = split(d("2026-01-01"), d("2026-03-31"), Grain::Range).unwrap();
        assert_eq!(range[0].label, "2026-01-01..2026-03-31");
        assert!(split(d("2026-03-01"), d("2026-01-01"), Grain::Month).is_err());
        assert!(split(d("1000-01-01"), d("2026-01-01"), Grain::Month).is_err());
    }
}
