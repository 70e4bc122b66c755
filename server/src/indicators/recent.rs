//! Reports counted a moment ago, for the console's indicators page (#18).
//! Counting a year of 100,000 cases takes most of a second, longer than a
//! page may take. The page shows the last count of the same report while
//! it is current: nothing the count read has changed since (the
//! programme's data generation, a counter every fold adds one to) and it
//! is younger than [`MAX_AGE`]. Otherwise it starts one new count (only one
//! per report at a time) and waits for it briefly; meanwhile it shows the
//! last count with the time it was made, or says it is counting. The API
//! always counts afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{Request, Row};
use crate::cases::projection::data_generation_counter;
use crate::db::DbConnection;
use crate::error::AppResult;

/// How many reports are kept (each a few hundred rows at most).
const KEPT: usize = 64;

/// A count older than this is counted again even if no fold changed the
/// data: a report also reads what a fold does not count (a site's code, a
/// child's details), and open deadlines turn late with time alone.
pub const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The programme's data generation now: a count made at it is current
/// while it stays.
pub fn generation(conn: &mut DbConnection, programme: &str) -> AppResult<i64> {
    crate::changes::counter(conn, &data_generation_counter(programme))
}

/// A finished count of one report.
#[derive(Debug)]
pub struct Counted {
    /// The data generation read before counting: the rows count at least
    /// everything stored up to it.
    pub generation: i64,
    pub at: DateTime<Utc>,
    pub rows: Vec<Row>,
}

impl Counted {
    /// Counts `request` now (on the caller's connection: call off the HTTP
    /// workers).
    pub fn count(conn: &mut DbConnection, request: &Request) -> AppResult<Counted> {
        let generation = generation(conn, &request.programme.id)?;
        let at = Utc::now();
        let rows = super::report(conn, request)?;
        Ok(Counted {
            generation,
            at,
            rows,
        })
    }

    fn is_current(&self, generation: i64, now: DateTime<Utc>) -> bool {
        self.generation >= generation && now - self.at < MAX_AGE
    }
}

/// The reports counted lately, by [`key`].
#[derive(Debug, Default)]
pub struct Recent {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
struct Slot {
    latest: watch::Sender<Option<Arc<Counted>>>,
    counting: bool,
    used: Instant,
}

/// What the page finds for a report.
pub struct Lookup {
    /// The last count of the report, current or not.
    pub last: Option<Arc<Counted>>,
    /// The caller must count the report and [`Recent::finish`] it: the last
    /// count is not current and nobody is counting it.
    pub must_count: bool,
    generation: i64,
    changes: watch::Receiver<Option<Arc<Counted>>>,
}

impl Lookup {
    /// The last count, if it is current.
    pub fn current(&self) -> Option<Arc<Counted>> {
        self.last
            .clone()
            .filter(|c| c.is_current(self.generation, Utc::now()))
    }

    /// Waits at most `budget` for a current count; a zero budget never
    /// waits (a timer of zero still waits for the timer's next tick).
    pub async fn wait(&mut self, budget: Duration) -> Option<Arc<Counted>> {
        if let Some(current) = self.current() {
            return Some(current);
        }
        if budget.is_zero() {
            return None;
        }
        let generation = self.generation;
        let arrived = tokio::time::timeout(
            budget,
            self.changes.wait_for(|c| {
                c.as_ref()
                    .is_some_and(|c| c.is_current(generation, Utc::now()))
            }),
        )
        .await;
        match arrived {
            Ok(Ok(counted)) => counted.clone(),
            _ => None,
        }
    }
}

/// Which report a request is, whoever asks: everything that decides its
/// rows, the audience's sites and suppression included (a viewer's report
/// is never an analyst's).
pub fn key(request: &Request) -> String {
    let mut sites = request.site_ids.clone();
    sites.sort();
    let by: Vec<&str> = request.by.iter().map(|(n, _)| n.as_str()).collect();
    let items: Vec<String> = request.items.iter().map(|i| i.id()).collect();
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}",
        request.programme.id,
        request.from,
        request.to,
        request.grain.name(),
        by.join(","),
        items.join(","),
        sites.join(","),
        request.suppressed,
        request.threshold,
    )
}

impl Recent {
    /// The last count of `key` and whether the caller must count it, the
    /// data being at `generation`. At most one count of a report runs.
    pub fn look(&self, key: &str, generation: i64) -> Lookup {
        let mut slots = self.slots.lock().expect("recent reports lock");
        if !slots.contains_key(key) && slots.len() >= KEPT {
            // The least recently used report that nobody is counting.
            let oldest = slots
                .iter()
                .filter(|(_, s)| !s.counting)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                slots.remove(&oldest);
            }
        }
        let slot = slots.entry(key.to_string()).or_insert_with(|| Slot {
            latest: watch::Sender::new(None),
            counting: false,
            used: Instant::now(),
        });
        slot.used = Instant::now();
        let last = slot.latest.borrow().clone();
        let current = last
            .as_ref()
            .is_some_and(|c| c.is_current(generation, Utc::now()));
        let must_count = !current && !slot.counting;
        if must_count {
            slot.counting = true;
        }
        Lookup {
            last,
            must_count,
            generation,
            changes: slot.latest.subscribe(),
        }
    }

    /// Ends the count `look` asked for: its result, or `None` when it
    /// failed (the next look counts again).
    pub fn finish(&self, key: &str, counted: Option<Counted>) {
        let mut slots = self.slots.lock().expect("recent reports lock");
        if let Some(slot) = slots.get_mut(key) {
            slot.counting = false;
            if let Some(counted) = counted {
                slot.latest.send_replace(Some(Arc::new(counted)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(generation: i64, ago: chrono::TimeDelta) -> Counted {
        Counted {
            generation,
            at: Utc::now() - ago,
            rows: Vec::new(),
        }
    }

    #[test]
    fn one_count_at_a_time_then_reused_while_current() {
        let recent = Recent::default();
        let first = recent.look("r", 7);
        assert!(first.must_count && first.last.is_none());
        let second = recent.look("r", 7);
        assert!(!second.must_count, "the first look is counting it");
        recent.finish("r", Some(counted(7, chrono::TimeDelta::zero())));
        let third = recent.look("r", 7);
        assert!(!third.must_count);
        assert_eq!(third.current().unwrap().generation, 7);
        // A fold since: the last count is shown, and counted again.
        let fourth = recent.look("r", 8);
        assert!(fourth.must_count && fourth.current().is_none());
        assert_eq!(fourth.last.as_ref().unwrap().generation, 7);
    }

    #[test]
    fn an_old_or_failed_count_is_counted_again() {
        let recent = Recent::default();
        assert!(recent.look("r", 1).must_count);
        recent.finish(
            "r",
            Some(counted(1, MAX_AGE + chrono::TimeDelta::seconds(1))),
        );
        assert!(recent.look("r", 1).must_count, "too old");
        recent.finish("r", None);
        let again = recent.look("r", 1);
        assert!(again.must_count, "a failed count leaves nobody counting");
        assert!(again.last.is_some(), "and keeps the last count shown");
    }

    #[actix_rt::test]
    async fn a_waiting_page_gets_the_count_when_it_arrives_in_time() {
        let recent = Arc::new(Recent::default());
        let mut waiting = recent.look("r", 3);
        assert!(waiting.must_count);
        let counter = recent.clone();
        actix_rt::spawn(async move {
            counter.finish("r", Some(counted(3, chrono::TimeDelta::zero())));
        });
        let got = waiting.wait(Duration::from_secs(30)).await;
        assert_eq!(got.unwrap().generation, 3);
        let mut late = recent.look("r", 4);
        assert!(late.wait(Duration::from_millis(1)).await.is_none());
        assert!(late.wait(Duration::ZERO).await.is_none());
    }

    #[test]
    fn only_so_many_reports_are_kept() {
        let recent = Recent::default();
        for n in 0..KEPT + 10 {
            let key = n.to_string();
            recent.look(&key, 0);
            recent.finish(&key, None);
        }
        assert_eq!(recent.slots.lock().unwrap().len(), KEPT);
    }
}
