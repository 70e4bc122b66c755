//! Time as the manuals count it: limits in hours, calendar days, working
//! days, weeks, months and years, in the programme's time zone, skipping its
//! weekend and public holidays. A limit counted in days ends at the end of
//! the local day it lands on — "within 7 working days" is met by anything
//! done on the seventh working day.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::Value;

/// When something happened: an instant, or a whole local day when the form
/// asked only for a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment {
    /// The instant; for a date, the start of that local day.
    pub at: DateTime<Utc>,
    pub date_only: bool,
}

impl Moment {
    pub fn instant(at: DateTime<Utc>) -> Moment {
        Moment {
            at,
            date_only: false,
        }
    }
}

/// A length of time a rule allows. Negative counts run backwards: "at
/// least 2 working days before the meeting" is `-2wd` from the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Hours(i64),
    Days(i64),
    WorkingDays(i64),
    Weeks(i64),
    Months(i32),
    Years(i32),
}

impl Limit {
    /// `48h`, `21d`, `7wd`, `8w`, `3mo`, `1y`; `-2wd` counts backwards.
    pub fn parse(text: &str) -> Result<Limit, String> {
        let (sign, rest) = match text.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, text),
        };
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?}: a limit needs a unit (h, d, wd, w, mo, y)"))?;
        let (digits, unit) = rest.split_at(split);
        let n: i32 = digits
            .parse::<u16>()
            .map(i32::from)
            .map_err(|_| format!("{text:?}: a limit starts with a whole number"))?;
        let n = n * sign;
        let n64 = i64::from(n);
        Ok(match unit {
            "h" => Limit::Hours(n64),
            "d" => Limit::Days(n64),
            "wd" => Limit::WorkingDays(n64),
            "w" => Limit::Weeks(n64),
            "mo" => Limit::Months(n),
            "y" => Limit::Years(n),
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (h, d, wd, w, mo or y)"
                ))
            }
        })
    }

    /// As a plain length of time (for "due soon" windows): working days,
    /// months and years are taken at their shortest.
    pub fn approximate(&self) -> Duration {
        match *self {
            Limit::Hours(h) => Duration::hours(h),
            Limit::Days(d) | Limit::WorkingDays(d) => Duration::days(d),
            Limit::Weeks(w) => Duration::weeks(w),
            Limit::Months(m) => Duration::days(28 * i64::from(m)),
            Limit::Years(y) => Duration::days(365 * i64::from(y)),
        }
    }

    /// Counted back from its start ("before the meeting").
    pub fn is_backwards(&self) -> bool {
        match *self {
            Limit::Hours(n) | Limit::Days(n) | Limit::WorkingDays(n) | Limit::Weeks(n) => n < 0,
            Limit::Months(n) | Limit::Years(n) => n < 0,
        }
    }
}

fn add_months(day: NaiveDate, months: i32) -> NaiveDate {
    let n = Months::new(months.unsigned_abs());
    if months >= 0 {
        day.checked_add_months(n).unwrap_or(NaiveDate::MAX)
    } else {
        day.checked_sub_months(n).unwrap_or(NaiveDate::MIN)
    }
}

/// A programme's calendar: time zone, weekend days, public holidays.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub time_zone: Tz,
    pub weekend: Vec<Weekday>,
    pub holidays: BTreeSet<NaiveDate>,
    /// Weekend days that are working days by decree.
    pub working_days: BTreeSet<NaiveDate>,
}

pub fn parse_weekday(text: &str) -> Result<Weekday, String> {
    Ok(match text {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return Err(format!("{text:?} is not a weekday (mon … sun)")),
    })
}

impl Calendar {
    pub fn is_working_day(&self, day: NaiveDate) -> bool {
        if self.holidays.contains(&day) {
            return false;
        }
        !self.weekend.contains(&day.weekday()) || self.working_days.contains(&day)
    }

    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.time_zone).date_naive()
    }

    /// An instant as local time with its offset (`2026-06-18T12:00:00+06:00`):
    /// what a person in the programme's country reads.
    pub fn local_rfc3339(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.time_zone)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
    }

    /// The first instant of a local day.
    pub fn start_of(&self, day: NaiveDate) -> DateTime<Utc> {
        self.local(day, NaiveTime::MIN)
    }

    /// The last second of a local day.
    pub fn end_of(&self, day: NaiveDate) -> DateTime<Utc> {
        let last = NaiveTime::from_hms_opt(23, 59, 59).expect("valid time");
        self.local(day, last)
    }

    fn local(&self, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        let naive = day.and_time(time);
        match self.time_zone.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            // A gap (clocks moved forward): an hour later exists.
            chrono::LocalResult::None => self
                .time_zone
                .from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&naive)),
        }
    }

    /// Reads a fact value or an `occurred_at` answer: an RFC 3339 date-time,
    /// or a date (the local day).
    pub fn moment(&self, value: &Value) -> Option<Moment> {
        let text = value.as_str()?;
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Some(Moment::instant(at.with_timezone(&Utc)));
        }
        let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        Some(Moment {
            at: self.start_of(day),
            date_only: true,
        })
    }

    /// When a limit counted from `start` runs out.
    pub fn due(&self, start: Moment, limit: Limit) -> DateTime<Utc> {
        let day = self.local_date(start.at);
        let last_day = match limit {
            Limit::Hours(h) => return start.at + Duration::hours(h),
            Limit::Days(d) => day + Duration::days(d),
            Limit::Weeks(w) => day + Duration::weeks(w),
            Limit::Months(m) => add_months(day, m),
            Limit::Years(y) => add_months(day, 12 * y),
            Limit::WorkingDays(n) => {
                let mut current = day;
                let mut counted = 0;
                while counted < n.abs() {
                    current = if n > 0 {
                        current.succ_opt().unwrap_or(NaiveDate::MAX)
                    } else {
                        current.pred_opt().unwrap_or(NaiveDate::MIN)
                    };
                    if self.is_working_day(current) {
                        counted += 1;
                    }
                }
                current
            }
        };
        self.end_of(last_day)
    }

    /// Whether `done` met a deadline due at `due`: a date-only answer counts
    /// as on time on the due date itself.
    pub fn on_time(&self, done: Moment, due: DateTime<Utc>) -> bool {
        if done.date_only {
            self.local_date(done.at) <= self.local_date(due)
        } else {
            done.at <= due
        }
    }

    /// Whether `done` happened at or after `start`, at the precision of the
    /// less precise of the two.
    pub fn not_before(&self, done: Moment, start: Moment) -> bool {
        if done.date_only || start.date_only {
            self.local_date(done.at) >= self.local_date(start.at)
        } else {
            done.at >= start.at
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn almaty(holidays: &[&str]) -> Calendar {
        Calendar {
            time_zone: "Asia/Almaty".parse().unwrap(),
            weekend: vec![Weekday::Sat, Weekday::Sun],
            holidays: holidays
                .iter()
                .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap())
                .collect(),
            working_days: BTreeSet::new(),
        }
    }

    fn at(text: &str) -> Moment {
        almaty(&[]).moment(&json!(text)).unwrap()
    }

    #[test]
    fn limits_parse_and_refuse_unknown_units() {
        assert_eq!(Limit::parse("48h"), Ok(Limit::Hours(48)));
        assert_eq!(Limit::parse("7wd"), Ok(Limit::WorkingDays(7)));
        assert_eq!(Limit::parse("3mo"), Ok(Limit::Months(3)));
        assert_eq!(Limit::parse("0d"), Ok(Limit::Days(0)));
        assert_eq!(Limit::parse("-2wd"), Ok(Limit::WorkingDays(-2)));
        assert!(Limit::parse("-3mo").unwrap().is_backwards());
        for bad in ["48", "h", "3m", "--1d", "1.5d", "7 wd", "-", "99999d"] {
            assert!(Limit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hours_are_exact_and_days_end_at_local_midnight() {
        let cal = almaty(&[]);
        // Friday 17:00 in Almaty (UTC+5): 48 h later is Sunday 17:00.
        let friday = at("2026-11-20T17:00:00+05:00");
        assert_eq!(
            cal.due(friday, Limit::Hours(48)).to_rfc3339(),
            "2026-11-22T12:00:00+00:00"
        );
        assert_eq!(
            cal.due(friday, Limit::Days(0)).to_rfc3339(),
            "2026-11-20T18:59:59+00:00"
        );
        assert_eq!(
            cal.due(at("2026-01-31"), Limit::Months(1)),
            cal.end_of(NaiveDate::from_ymd_opt(2026, 2, 28).unwrap())
        );
        assert_eq!(
            cal.due(at("2026-11-20"), Limit::Weeks(8)),
            cal.end_of(NaiveDate::from_ymd_opt(2027, 1, 15).unwrap())
        );
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        // Independence Day, Wednesday 16 December 2026.
        let cal = almaty(&["2026-12-16"]);
        // From Friday 11 Dec: Mon 14, Tue 15, (Wed 16 holiday), Thu 17,
        // Fri 18, Mon 21, Tue 22, Wed 23 is the seventh working day.
        let due = cal.due(at("2026-12-11T10:00:00+05:00"), Limit::WorkingDays(7));
        assert_eq!(cal.local_date(due).to_string(), "2026-12-23");
        let without = almaty(&[]).due(at("2026-12-11T10:00:00+05:00"), Limit::WorkingDays(7));
        assert_eq!(cal.local_date(without).to_string(), "2026-12-22");
        // Two working days before Thursday 17 December, the 16th a
        // holiday: Monday 14th.
        let before = cal.due(at("2026-12-17T10:00:00+05:00"), Limit::WorkingDays(-2));
        assert_eq!(cal.local_date(before).to_string(), "2026-12-14");
        // Starting on a Saturday counts from Monday.
        let due = cal.due(at("2026-12-12"), Limit::WorkingDays(1));
        assert_eq!(cal.local_date(due).to_string(), "2026-12-14");
        // Unless that Sunday is worked by decree.
        let mut worked = cal.clone();
        worked
            .working_days
            .insert(NaiveDate::from_ymd_opt(2026, 12, 13).unwrap());
        let due = worked.due(at("2026-12-12"), Limit::WorkingDays(1));
        assert_eq!(cal.local_date(due).to_string(), "2026-12-13");
    }

    #[test]
    fn date_only_answers_compare_by_day() {
        let cal = almaty(&[]);
        let due = cal.due(at("2026-11-20T17:00:00+05:00"), Limit::Hours(48));
        assert!(cal.on_time(at("2026-11-22"), due));
        assert!(!cal.on_time(at("2026-11-23"), due));
        assert!(cal.on_time(at("2026-11-22T16:59:00+05:00"), due));
        assert!(!cal.on_time(at("2026-11-22T17:01:00+05:00"), due));
        assert!(cal.not_before(at("2026-11-20"), at("2026-11-20T17:00:00+05:00")));
        assert!(cal.moment(&json!("20/11/2026")).is_none());
    }
}
