//! Time as the database stores it, and ages: the clock every module reads
//! and the one rule for a child's age. A leaf: it imports nothing of ours.

use chrono::{Datelike, NaiveDate, NaiveDateTime};

/// Current UTC time at the precision stored in the database (microseconds),
/// so values read back compare equal on both dialects.
pub fn now() -> NaiveDateTime {
    use chrono::{SubsecRound, Utc};
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// Whole years from `born` to `on`.
pub fn age_in_years(born: NaiveDate, on: NaiveDate) -> Option<i32> {
    let mut years = on.year() - born.year();
    if (on.month(), on.day()) < (born.month(), born.day()) {
        years -= 1;
    }
    (years >= 0).then_some(years)
}

/// A chore a server does at most once per interval, on a request that
/// happens to come by (the server runs no timers): the first caller after
/// the interval gets `true`, and only one of any that race.
#[derive(Debug, Default)]
pub struct AtMostEvery {
    /// When it last fell due, in seconds since the epoch (0: never).
    last: std::sync::atomic::AtomicI64,
}

impl AtMostEvery {
    pub const fn new() -> Self {
        AtMostEvery {
            last: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Whether the chore is due at `now`, `every_secs` after it last was.
    pub fn due(&self, now: NaiveDateTime, every_secs: i64) -> bool {
        use std::sync::atomic::Ordering;
        let epoch = now.and_utc().timestamp();
        let last = self.last.load(Ordering::Relaxed);
        epoch - last >= every_secs
            && self
                .last
                .compare_exchange(last, epoch, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// `YYYY-MM-DD` read digit by digit: a report reads millions of stored
/// days, and chrono's general parser was a tenth of its time (#19 item
/// 4). Any other form is read as chrono reads it.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    match text.as_bytes() {
        date @ [_, _, _, _, b'-', _, _, b'-', _, _] => ymd(date),
        _ => text.parse().ok(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (as a stored `NaiveDateTime` without a
/// fraction is written) read the same way; any other form as chrono
/// reads it.
pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    match text.as_bytes() {
        [date @ .., b'T', h1, h2, b':', m1, m2, b':', s1, s2]
            if matches!(date, [_, _, _, _, b'-', _, _, b'-', _, _]) =>
        {
            ymd(date)?.and_hms_opt(
                digits(&[*h1, *h2])?,
                digits(&[*m1, *m2])?,
                digits(&[*s1, *s2])?,
            )
        }
        _ => text.parse().ok(),
    }
}

/// The date of `YYYY-MM-DD`'s ten bytes.
fn ymd(date: &[u8]) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(
        i32::try_from(digits(&date[..4])?).ok()?,
        digits(&date[5..7])?,
        digits(&date[8..])?,
    )
}

fn digits(ascii: &[u8]) -> Option<u32> {
    ascii.iter().try_fold(0u32, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// Serde readers for stored days and moments with [`parse_date`] and
/// [`parse_datetime`] (`#[serde(deserialize_with = ...)]`); they write
/// as chrono's own serde does.
pub mod stored {
    use std::fmt;

    use chrono::{NaiveDate, NaiveDateTime};
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};

    struct Text<T>(fn(&str) -> Option<T>, &'static str);

    impl<T> Visitor<'_> for Text<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).ok_or_else(|| E::custom(format!("{v:?} is not {}", self.1)))
        }
    }

    pub fn date<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        d.deserialize_str(Text(super::parse_date, "a date (YYYY-MM-DD)"))
    }

    pub fn datetime<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        d.deserialize_str(Text(super::parse_datetime, "a date and time"))
    }

    pub fn option_datetime<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NaiveDateTime>, D::Error> {
        struct Maybe;
        impl<'de> Visitor<'de> for Maybe {
            type Value = Option<NaiveDateTime>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a date and time, or null")
            }
            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                datetime(d).map(Some)
            }
        }
        d.deserialize_option(Maybe)
    }

    /// A list of days.
    pub fn dates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NaiveDate>, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Vec<NaiveDate>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of dates")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(Day(day)) = seq.next_element()? {
                    out.push(day);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(List)
    }

    struct Day(NaiveDate);

    impl<'de> serde::Deserialize<'de> for Day {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
            date(d).map(Day)
        }
    }

    /// A list of days as a value of its own (`partial::entries`' values).
    #[derive(Debug, Default)]
    pub struct Dates(pub Vec<NaiveDate>);

    impl std::ops::Deref for Dates {
        type Target = Vec<NaiveDate>;
        fn deref(&self) -> &Vec<NaiveDate> {
            &self.0
        }
    }

    impl<'de> serde::Deserialize<'de> for Dates {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dates, D::Error> {
            dates(d).map(Dates)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_days_and_moments_read_as_chrono_reads_them() {
        for text in [
            "2026-03-01",
            "1999-12-31",
            "2024-02-29",
            "+2026-03-01",
            " 2026-03-01",
            "2026-3-01",
        ] {
            assert_eq!(parse_date(text), text.parse().ok(), "{text}");
        }
        for text in ["2026-02-30", "2026-13-01", "20x6-03-01", "2026/03/01", ""] {
            assert_eq!(parse_date(text), None, "{text}");
        }
        for text in [
            "2026-03-01T10:20:30",
            "2026-03-01T23:59:59",
            "2026-03-01T10:20:30.250",
            "2026-03-01T24:00:00",
            "2026-03-01T10:61:00",
            "2026-03-01 10:20:30",
        ] {
            assert_eq!(parse_datetime(text), text.parse().ok(), "{text}");
        }
        let json = r#"{"at":"2026-03-01T10:20:30","days":["2026-03-01","2026-03-02"],"none":null}"#;
        #[derive(Debug, serde::Deserialize)]
        struct Stored {
            #[serde(deserialize_with = "stored::datetime")]
            at: NaiveDateTime,
            #[serde(deserialize_with = "stored::dates")]
            days: Vec<NaiveDate>,
            #[serde(deserialize_with = "stored::option_datetime")]
            none: Option<NaiveDateTime>,
        }
        let read: Stored = serde_json::from_str(json).unwrap();
        assert_eq!(read.at, "2026-03-01T10:20:30".parse().unwrap());
        assert_eq!(read.days.len(), 2);
        assert_eq!(read.none, None);
        let wrong = serde_json::from_str::<Stored>(r#"{"at":"soon","days":[],"none":null}"#);
        assert!(wrong
            .unwrap_err()
            .to_string()
            .contains("\"soon\" is not a date and time"));
    }
}
