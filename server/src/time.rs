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
