//! Case numbers as the manuals write them. KZ (§3.5 F3): per site `1`, `2`,
//! …; a readmission keeps the child's first number and adds the admission
//! count, `1.1`, `1.2`. BT (§3.1): `NNN-DDMM-YY-ORG-II` — the site's count of
//! cases registered that month, the registration day and month, the year,
//! the site's organisation code, the opening worker's initials.
//!
//! Counters are rows bumped by an upsert inside the opening transaction:
//! the row lock serialises concurrent openings, on one server or many.

use chrono::{Datelike, NaiveDate};
use diesel::prelude::*;

use crate::db::schema::case_number_counters;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};

/// The next value of the counter named `scope` (1 for a new scope). The
/// update locks the row until the transaction ends; a first use races only
/// on the insert, which the loser retries as an update.
pub fn next(conn: &mut DbConnection, scope: &str) -> AppResult<i64> {
    use case_number_counters::dsl;
    for _ in 0..2 {
        let bumped = diesel::update(dsl::case_number_counters.find(scope))
            .set(dsl::last_value.eq(dsl::last_value + 1_i64))
            .execute(conn)?;
        if bumped == 1 {
            return Ok(dsl::case_number_counters
                .find(scope)
                .select(dsl::last_value)
                .first(conn)?);
        }
        // In a savepoint, so a lost race does not abort the transaction.
        let inserted = conn.transaction(|conn| {
            diesel::insert_into(dsl::case_number_counters)
                .values((dsl::scope.eq(scope), dsl::last_value.eq(1_i64)))
                .execute(conn)
        });
        match inserted {
            Ok(_) => return Ok(1),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Unavailable(
        "could not allocate a case number; try again".into(),
    ))
}

/// KZ: the number of admission `admission` (0 = first) of a child whose
/// first admission was numbered `root`.
pub fn kz_number(root: &str, admission: i32) -> String {
    if admission == 0 {
        root.to_string()
    } else {
        format!("{root}.{admission}")
    }
}

/// BT: the code of the `count`-th case registered at a site in the month of
/// `registered`.
pub fn bt_code(count: i64, registered: NaiveDate, org: &str, initials: &str) -> String {
    format!(
        "{count:03}-{:02}{:02}-{:02}-{org}-{initials}",
        registered.day(),
        registered.month(),
        registered.year() % 100
    )
}

/// BT counter scope: per site and calendar month of registration.
pub fn bt_scope(site_id: &str, registered: NaiveDate) -> String {
    format!(
        "bt:{site_id}:{:04}-{:02}",
        registered.year(),
        registered.month()
    )
}

pub fn kz_scope(site_id: &str) -> String {
    format!("kz:{site_id}")
}

/// Initials for a BT code: the first letter of the first two words of a
/// name, upper-case ASCII (`Karma Thinley` → `KT`); `XX` when the name
/// gives none (the code's pattern needs two letters).
pub fn initials(display_name: &str) -> String {
    let letters: String = display_name
        .split_whitespace()
        .filter_map(|word| word.chars().find(char::is_ascii_alphabetic))
        .map(|c| c.to_ascii_uppercase())
        .take(3)
        .collect();
    match letters.len() {
        0 => "XX".into(),
        1 => format!("{letters}X"),
        _ => letters.chars().take(2).collect(),
    }
}

/// An organisation code as the BT pattern wants it: upper-case letters and
/// digits, starting with a letter, at most ten.
pub fn org_code(code: &str) -> String {
    let cleaned: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .take(10)
        .collect();
    if cleaned.starts_with(|c: char| c.is_ascii_alphabetic()) {
        cleaned
    } else {
        format!("O{}", cleaned.chars().take(9).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kz_readmissions_extend_the_first_number() {
        assert_eq!(kz_number("17", 0), "17");
        assert_eq!(kz_number("17", 1), "17.1");
        assert_eq!(kz_number("17", 2), "17.2");
    }

    #[test]
    fn bt_codes_follow_the_sop_example() {
        let day = NaiveDate::from_ymd_opt(2020, 12, 7).unwrap();
        let code = bt_code(3, day, &org_code("NCWC"), &initials("Karma Thanda"));
        assert_eq!(code, "003-0712-20-NCWC-KT");
        assert_eq!(initials("Pema"), "PX");
        assert_eq!(initials("Дорджи"), "XX");
        assert_eq!(org_code("ren-ew"), "RENEW");
        assert_eq!(org_code("7x"), "O7X");
        assert_eq!(bt_scope("s1", day), "bt:s1:2020-12");
    }
}
