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
