//! The editable part of a programme's calendar: holidays admins add, and
//! shipped holidays they turn back into working days (a government moves a
//! holiday by decree every year). Owns `calendar_days`.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use diesel::prelude::*;
use serde::Serialize;

use super::{Calendar, Programme};
use crate::db::schema::calendar_days;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::time::now;

pub const HOLIDAY: &str = "holiday";
pub const WORKING: &str = "working";

/// What an admin makes of a day: [`HOLIDAY`] or [`WORKING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DayKind {
    Holiday,
    Working,
}

#[derive(Debug, Clone, PartialEq, Serialize, Queryable, utoipa::ToSchema)]
pub struct DayChange {
    pub programme: String,
    pub day: String,
    pub kind: String,
    pub name: String,
    pub changed_by: Option<String>,
    #[serde(serialize_with = "crate::json::utc")]
    pub changed_at: chrono::NaiveDateTime,
}

/// The programme's calendar as shipped, with the database's changes.
pub fn calendar(conn: &mut DbConnection, programme: &Programme) -> AppResult<Calendar> {
    let changes: Vec<(String, String)> = calendar_days::table
        .filter(calendar_days::programme.eq(&programme.id))
        .select((calendar_days::day, calendar_days::kind))
        .load(conn)?;
    let mut calendar = programme.calendar.clone();
    if changes.is_empty() {
        return Ok(calendar);
    }
    for (day, kind) in changes {
        let Ok(day) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
            continue;
        };
        if kind == HOLIDAY {
            calendar.holidays.insert(day);
            calendar.working_days.remove(&day);
        } else {
            // A cancelled holiday, or a weekend day worked by decree.
            calendar.holidays.remove(&day);
            calendar.working_days.insert(day);
        }
    }
    Ok(calendar)
}

/// Makes `day` a holiday (`kind` = holiday) or a working day (`working`).
pub fn set_day(
    conn: &mut DbConnection,
    programme: &str,
    day: NaiveDate,
    kind: &str,
    name: &str,
    by: Option<&str>,
) -> AppResult<()> {
    if kind != HOLIDAY && kind != WORKING {
        return Err(AppError::invalid_field("/kind", "holiday or working"));
    }
    let day = day.format("%Y-%m-%d").to_string();
    diesel::delete(
        calendar_days::table
            .filter(calendar_days::programme.eq(programme))
            .filter(calendar_days::day.eq(&day)),
    )
    .execute(conn)?;
    diesel::insert_into(calendar_days::table)
        .values((
            calendar_days::programme.eq(programme),
            calendar_days::day.eq(&day),
            calendar_days::kind.eq(kind),
            calendar_days::name.eq(name),
            calendar_days::changed_by.eq(by),
            calendar_days::changed_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn changes(conn: &mut DbConnection, programme: &str) -> AppResult<Vec<DayChange>> {
    Ok(calendar_days::table
        .filter(calendar_days::programme.eq(programme))
        .order(calendar_days::day)
        .load(conn)?)
}

/// Forgets an admin's change of `day`: back to the shipped calendar.
pub fn reset_day(conn: &mut DbConnection, programme: &str, day: NaiveDate) -> AppResult<bool> {
    let day = day.format("%Y-%m-%d").to_string();
    let removed = diesel::delete(
        calendar_days::table
            .filter(calendar_days::programme.eq(programme))
            .filter(calendar_days::day.eq(&day)),
    )
    .execute(conn)?;
    Ok(removed > 0)
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Holiday {
    pub date: NaiveDate,
    pub name: String,
    /// `shipped` (from programme.json) or `added` (by an admin).
    pub origin: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CalendarView {
    pub programme: String,
    pub time_zone: String,
    pub weekend: Vec<String>,
    /// Non-working days, shipped and added, in date order.
    pub holidays: Vec<Holiday>,
    /// Shipped holidays an admin turned back into working days.
    pub working_days: Vec<DayChange>,
}

/// The calendar deadlines count working days with, as it stands.
pub fn view(conn: &mut DbConnection, programme: &Programme) -> AppResult<CalendarView> {
    let changes = changes(conn, &programme.id)?;
    let parse = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
    let removed: BTreeSet<NaiveDate> = changes
        .iter()
        .filter(|c| c.kind == WORKING)
        .filter_map(|c| parse(&c.day))
        .collect();
    let mut holidays: Vec<Holiday> = programme
        .holidays
        .iter()
        .filter(|(d, _)| !removed.contains(d))
        .map(|(date, name)| Holiday {
            date: *date,
            name: name.clone(),
            origin: "shipped",
        })
        .collect();
    for c in changes.iter().filter(|c| c.kind == HOLIDAY) {
        if let Some(date) = parse(&c.day) {
            holidays.retain(|h| h.date != date);
            holidays.push(Holiday {
                date,
                name: c.name.clone(),
                origin: "added",
            });
        }
    }
    holidays.sort_by_key(|h| h.date);
    Ok(CalendarView {
        programme: programme.id.clone(),
        time_zone: programme.calendar.time_zone.name().to_string(),
        weekend: programme
            .calendar
            .weekend
            .iter()
            .map(|d| d.to_string().to_lowercase())
            .collect(),
        holidays,
        working_days: changes.into_iter().filter(|c| c.kind == WORKING).collect(),
    })
}
