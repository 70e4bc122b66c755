//! Failed-login throttling, kept in the database so every server behind a
//! load balancer shares the counts.
//!
//! The model (docs/operations.md, "Login throttling"):
//! - per account *and* client address: after `slow_after` failures each
//!   attempt waits a doubling delay; after `lock_after` that address may not
//!   try that account again for `lock_secs`. Someone guessing from elsewhere
//!   never locks the account's owner out.
//! - per client address alone (many accounts from one office NAT): only
//!   slowed, never refused, past `address_slow_after` failures.
//! - per account alone: refused only when an admin sets
//!   `account_lock_after` (off by default).
//!
//! An attempt is reserved (counted as failed) in one write transaction
//! before its password is verified, so parallel guesses cannot all read a
//! count below the limit: at most `lock_after` passwords are ever verified
//! per account and address within a lock. A right password releases it.

use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use crate::config::LoginThrottleSettings;
use crate::db::schema::login_throttle;
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::time::AtMostEvery;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Verify the password, after waiting this long.
    Allow(StdDuration),
    /// Refused without verifying, until the lock expires.
    Locked { retry_after_secs: u64 },
}

/// The counters one login attempt is held against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// This account from this address: slowed, then refused.
    pub pair: String,
    /// This account from anywhere: refused only under `account_lock_after`.
    pub account: String,
    /// This address at any account: slowed only.
    pub address: String,
}

impl Keys {
    pub fn new(username: &str, client_ip: &str) -> Keys {
        // Usernames are at most 64 characters: a longer one names no
        // account, and must not make a key as long as the request body.
        let account: String = username.trim().to_lowercase().chars().take(100).collect();
        Keys {
            pair: format!("pair:{account}|{client_ip}"),
            account: format!("user:{account}"),
            address: format!("ip:{client_ip}"),
        }
    }
}

/// One counter after the attempt was added to it.
struct Counted {
    failures: i32,
    locked_until: Option<NaiveDateTime>,
}

/// Makes the counter row of `key` (empty) unless it exists.
fn insert_if_missing(conn: &mut DbConnection, key: &str, now: NaiveDateTime) -> AppResult<()> {
    let fresh = (
        login_throttle::throttle_key.eq(key),
        login_throttle::failures.eq(0),
        login_throttle::window_started_at.eq(now),
        login_throttle::locked_until.eq(None::<NaiveDateTime>),
    );
    match conn {
        DbConnection::Pg(c) => diesel::insert_into(login_throttle::table)
            .values(fresh)
            .on_conflict_do_nothing()
            .execute(c)?,
        DbConnection::Sqlite(c) => diesel::insert_into(login_throttle::table)
            .values(fresh)
            .on_conflict_do_nothing()
            .execute(c)?,
    };
    Ok(())
}

/// Adds one attempt to `key` and returns its state; locks the key when the
/// count reaches `lock_at` (if any). The first statement that touches the
/// row takes its lock (PostgreSQL) or the write lock (SQLite's BEGIN
/// IMMEDIATE), held to commit: the count read back is this attempt's own.
fn count_attempt(
    conn: &mut DbConnection,
    key: &str,
    window_secs: i64,
    lock_at: Option<(i32, i64)>,
    now: NaiveDateTime,
) -> AppResult<Counted> {
    // A right password deletes the row (`release`), maybe between our
    // statements on PostgreSQL: then make it again. Once the increment has
    // touched the row, it is locked (or the database is) until commit.
    let mut counted = 0;
    for _ in 0..3 {
        insert_if_missing(conn, key, now)?;
        // An expired lock, or a window with no lock that has passed, starts over.
        let stale_window = now - Duration::seconds(window_secs);
        diesel::update(
            login_throttle::table.find(key).filter(
                login_throttle::locked_until
                    .le(now)
                    .or(login_throttle::locked_until
                        .is_null()
                        .and(login_throttle::window_started_at.lt(stale_window))),
            ),
        )
        .set((
            login_throttle::failures.eq(0),
            login_throttle::window_started_at.eq(now),
            login_throttle::locked_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
        counted = diesel::update(login_throttle::table.find(key))
            .set(login_throttle::failures.eq(login_throttle::failures + 1))
            .execute(conn)?;
        if counted == 1 {
            break;
        }
    }
    if counted != 1 {
        return Err(AppError::internal(format!(
            "login throttle: the counter {key:?} keeps vanishing"
        )));
    }
    let (failures, mut locked_until): (i32, Option<NaiveDateTime>) = login_throttle::table
        .find(key)
        .select((login_throttle::failures, login_throttle::locked_until))
        .first(conn)?;
    if let Some((limit, lock_secs)) = lock_at {
        if failures >= limit && locked_until.is_none() {
            let until = now + Duration::seconds(lock_secs);
            diesel::update(login_throttle::table.find(key))
                .set(login_throttle::locked_until.eq(until))
                .execute(conn)?;
            locked_until = Some(until);
        }
    }
    Ok(Counted {
        failures,
        locked_until,
    })
}

/// Refused when this attempt is past the limit while the lock holds.
fn refusal(counted: &Counted, limit: i32, now: NaiveDateTime) -> Option<Verdict> {
    let until = counted.locked_until.filter(|u| *u > now)?;
    (counted.failures > limit).then(|| Verdict::Locked {
        retry_after_secs: (until - now).num_seconds().max(1) as u64,
    })
}

/// The wait before an attempt that follows `failures_before` failures:
/// none up to `tolerated` of them, then `delay_ms`, doubling with each
/// further failure, at most `max_delay_ms`.
fn delay(failures_before: i32, tolerated: i32, rules: &LoginThrottleSettings) -> StdDuration {
    let past = failures_before - tolerated;
    if past <= 0 {
        return StdDuration::ZERO;
    }
    let doublings = (past - 1).min(20) as u32;
    let ms = rules.delay_ms.saturating_mul(1u64 << doublings);
    StdDuration::from_millis(ms.min(rules.max_delay_ms))
}

/// How often a server clears counters that no longer hold anything back.
const PRUNE_EVERY_SECS: i64 = 60;

/// When this process last pruned.
static LAST_PRUNE: AtMostEvery = AtMostEvery::new();

/// Deletes the counters that the next attempt would start over anyway: an
/// expired lock, or a window with no lock that has passed. Without it,
/// attempts at made-up usernames from many addresses would grow the table
/// for ever. Returns how many went.
pub fn prune(conn: &mut DbConnection, window_secs: i64, now: NaiveDateTime) -> AppResult<usize> {
    let stale_window = now - Duration::seconds(window_secs);
    Ok(diesel::delete(
        login_throttle::table.filter(
            login_throttle::locked_until
                .le(now)
                .or(login_throttle::locked_until
                    .is_null()
                    .and(login_throttle::window_started_at.lt(stale_window))),
        ),
    )
    .execute(conn)?)
}

/// Reserves this login attempt before its password is checked: counts it
/// as a failure against its keys (in one write transaction) and says
/// whether to verify, and after what wait. At most once a minute per
/// process it first prunes stale counters (one statement, linear in the
/// table, in its own short transaction).
pub fn reserve(
    conn: &mut DbConnection,
    keys: &Keys,
    rules: &LoginThrottleSettings,
    now: NaiveDateTime,
) -> AppResult<Verdict> {
    if LAST_PRUNE.due(now, PRUNE_EVERY_SECS) {
        write_tx(conn, |conn| prune(conn, rules.window_secs, now))?;
    }
    write_tx(conn, |conn| {
        // Always in this order (pair, account, address), so transactions
        // on PostgreSQL wait for each other's rows without deadlock.
        let pair = count_attempt(
            conn,
            &keys.pair,
            rules.window_secs,
            Some((rules.lock_after, rules.lock_secs)),
            now,
        )?;
        if let Some(refused) = refusal(&pair, rules.lock_after, now) {
            return Ok(refused);
        }
        let account_lock =
            (rules.account_lock_after > 0).then_some((rules.account_lock_after, rules.lock_secs));
        let account = count_attempt(conn, &keys.account, rules.window_secs, account_lock, now)?;
        if account_lock.is_some() {
            if let Some(refused) = refusal(&account, rules.account_lock_after, now) {
                return Ok(refused);
            }
        }
        let address = count_attempt(conn, &keys.address, rules.window_secs, None, now)?;
        Ok(Verdict::Allow(
            // The counts include this attempt.
            delay(pair.failures - 1, rules.slow_after, rules).max(delay(
                address.failures - 1,
                rules.address_slow_after,
                rules,
            )),
        ))
    })
}

/// A right password: forgets the account's failures (from this address and
/// overall) and takes this attempt back from the address's count.
/// Call inside the login's write transaction.
pub fn release(conn: &mut DbConnection, keys: &Keys) -> AppResult<()> {
    // In `reserve`'s order, one row at a time, so no two transactions wait
    // on each other in a cycle.
    for key in [&keys.pair, &keys.account] {
        diesel::delete(login_throttle::table.find(key)).execute(conn)?;
    }
    diesel::update(
        login_throttle::table
            .find(&keys.address)
            .filter(login_throttle::failures.gt(0)),
    )
    .set(login_throttle::failures.eq(login_throttle::failures - 1))
    .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_past_the_tolerated_count_up_to_the_cap() {
        let rules = LoginThrottleSettings {
            delay_ms: 100,
            max_delay_ms: 1000,
            ..LoginThrottleSettings::default()
        };
        let ms = |n| delay(n, 4, &rules).as_millis();
        assert_eq!((ms(1), ms(4)), (0, 0));
        assert_eq!((ms(5), ms(6), ms(7), ms(8)), (100, 200, 400, 800));
        assert_eq!((ms(9), ms(500)), (1000, 1000));
    }

    #[test]
    fn keys_join_account_and_address() {
        let keys = Keys::new(" Aigerim ", "10.0.0.7");
        assert_eq!(keys.pair, "pair:aigerim|10.0.0.7");
        assert_eq!(keys.account, "user:aigerim");
        assert_eq!(keys.address, "ip:10.0.0.7");
    }
}
