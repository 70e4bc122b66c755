//! Failed-login throttling, per account and per client address. Kept in the
//! database so every server behind a load balancer sees the same counts.

use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use crate::config::LoginThrottleSettings;
use crate::db::schema::login_throttle;
use crate::db::DbConnection;
use crate::error::AppResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead, after waiting this long.
    Allow(StdDuration),
    /// Refused until the lock expires.
    Locked { retry_after_secs: u64 },
}

pub fn account_key(username: &str) -> String {
    format!("user:{}", username.trim().to_lowercase())
}

pub fn address_key(ip: &str) -> String {
    format!("ip:{ip}")
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = login_throttle)]
#[diesel(treat_none_as_null = true)]
struct Row {
    throttle_key: String,
    failures: i32,
    window_started_at: NaiveDateTime,
    locked_until: Option<NaiveDateTime>,
}

fn load(conn: &mut DbConnection, key: &str) -> AppResult<Option<Row>> {
    Ok(login_throttle::table
        .find(key)
        .select(Row::as_select())
        .first(conn)
        .optional()?)
}

/// What to do with a login attempt before its password is even checked.
pub fn check(
    conn: &mut DbConnection,
    keys: &[String],
    rules: &LoginThrottleSettings,
    now: NaiveDateTime,
) -> AppResult<Verdict> {
    let mut delay_ms = 0u64;
    let mut locked_secs = 0u64;
    for key in keys {
        let Some(row) = load(conn, key)? else {
            continue;
        };
        if let Some(until) = row.locked_until.filter(|u| *u > now) {
            let secs = (until - now).num_seconds().max(1) as u64;
            locked_secs = locked_secs.max(secs);
            continue;
        }
        if now - row.window_started_at > Duration::seconds(rules.window_secs) {
            continue;
        }
        let excess = (row.failures - rules.slow_after).max(0) as u64;
        delay_ms = delay_ms.max((excess * rules.delay_ms).min(rules.max_delay_ms));
    }
    Ok(if locked_secs > 0 {
        Verdict::Locked {
            retry_after_secs: locked_secs,
        }
    } else {
        Verdict::Allow(StdDuration::from_millis(delay_ms))
    })
}

/// Counts one failure against every key; locks a key that reaches the limit.
/// Call inside a write transaction.
pub fn record_failure(
    conn: &mut DbConnection,
    keys: &[String],
    rules: &LoginThrottleSettings,
    now: NaiveDateTime,
) -> AppResult<()> {
    for key in keys {
        let row = match load(conn, key)? {
            Some(row)
                if now - row.window_started_at <= Duration::seconds(rules.window_secs)
                    && row.locked_until.is_none_or(|u| u > now) =>
            {
                let failures = row.failures + 1;
                Row {
                    failures,
                    locked_until: row.locked_until.or_else(|| {
                        (failures >= rules.lock_after)
                            .then(|| now + Duration::seconds(rules.lock_secs))
                    }),
                    ..row
                }
            }
            // No record, or an old window or an expired lock: start afresh.
            _ => Row {
                throttle_key: key.clone(),
                failures: 1,
                window_started_at: now,
                locked_until: None,
            },
        };
        let updated = diesel::update(login_throttle::table.find(key))
            .set(&row)
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(login_throttle::table)
                .values(&row)
                .execute(conn)?;
        }
    }
    Ok(())
}

/// Forgets the failures of a key after a successful login.
pub fn clear(conn: &mut DbConnection, key: &str) -> AppResult<()> {
    diesel::delete(login_throttle::table.find(key)).execute(conn)?;
    Ok(())
}
