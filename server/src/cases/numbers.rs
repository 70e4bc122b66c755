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

/// BT counter scope: per organisation code (as the code writes it) and
/// calendar month of registration. SOP §10.2: NNN is the "Number of cases
/// dealt with in the month" by the organisation the ORG segment names, so
/// two sites sharing an organisation code share the count and never issue
/// the same code.
pub fn bt_scope(org: &str, registered: NaiveDate) -> String {
    format!(
        "bt-org:{org}:{:04}-{:02}",
        registered.year(),
        registered.month()
    )
}

pub fn kz_scope(site_id: &str) -> String {
    format!("kz:{site_id}")
}

/// Initials for a BT code (SOP §10.2: "Initials of case manager opening
/// the case", `KT` for Karma Thanda): the worker's own initials when an
/// admin set them; otherwise the first letter of the first and last words
/// of the display name, in Latin letters whatever the script (`Дорджи
/// Пема` → `DP`, `Émile Zola` → `EZ`); a single name gives its first two
/// letters (`Pema` → `PE`). `XX` only when nothing can be read (a name in a
/// script without a transliteration here, e.g. Dzongkha, and no initials
/// set: the admin sets them, see `auth::users`).
pub fn initials(display_name: &str, set: Option<&str>) -> String {
    if let Some(set) = set.filter(|s| !s.is_empty()) {
        return set.to_string();
    }
    let words: Vec<String> = display_name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '.')
        .map(|w| w.chars().filter_map(latin).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect();
    match words.as_slice() {
        [] => "XX".into(),
        [one] => {
            let mut letters: String = one.chars().take(2).collect();
            if letters.len() < 2 {
                letters.push('X');
            }
            letters
        }
        [first, .., last] => [first, last]
            .iter()
            .filter_map(|w| w.chars().next())
            .collect(),
    }
}

/// The Latin capital a letter is written with in a code: ASCII as is,
/// accented Latin without its accent, Cyrillic (Russian and Kazakh) by the
/// first letter of its usual transliteration; `None` for anything else.
fn latin(c: char) -> Option<char> {
    if c.is_ascii_alphabetic() {
        return Some(c.to_ascii_uppercase());
    }
    const ACCENTED: [(&str, char); 19] = [
        ("àáâãäåāăąǎ", 'A'),
        ("çćĉċč", 'C'),
        ("ďđ", 'D'),
        ("èéêëēĕėęě", 'E'),
        ("ĝğġģ", 'G'),
        ("ĥħ", 'H'),
        ("ìíîïĩīĭįı", 'I'),
        ("ĵ", 'J'),
        ("ķ", 'K'),
        ("ĺļľŀł", 'L'),
        ("ñńņňŋ", 'N'),
        ("òóôõöøōŏő", 'O'),
        ("ŕŗř", 'R'),
        ("śŝşšß", 'S'),
        ("ţťŧ", 'T'),
        ("ùúûüũūŭůűų", 'U'),
        ("ŵ", 'W'),
        ("ýÿŷ", 'Y'),
        ("źżž", 'Z'),
    ];
    const CYRILLIC: &str =
        "аaәaбbвvгgғgдdеeёeжzзzиiіiйyкkқqлlмmнnңnоoөoпpрrсsтtуuұuүuфfхhһhцtчcшsщsъ ыyь эeюyяy";
    let lower = c.to_lowercase().next()?;
    if let Some((_, l)) = ACCENTED.iter().find(|(letters, _)| letters.contains(lower)) {
        return Some(*l);
    }
    let chars: Vec<char> = CYRILLIC.chars().collect();
    chars
        .chunks(2)
        .find(|pair| pair[0] == lower)
        .map(|pair| pair[1].to_ascii_uppercase())
        .filter(char::is_ascii_alphabetic)
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
        let code = bt_code(3, day, &org_code("NCWC"), &initials("Karma Thanda", None));
        assert_eq!(code, "003-0712-20-NCWC-KT");
        assert_eq!(org_code("ren-ew"), "RENEW");
        assert_eq!(org_code("7x"), "O7X");
        assert_eq!(bt_scope("NCWC", day), "bt-org:NCWC:2020-12");
    }

    /// SOP §10.2: "KT — Initials of case manager opening the case (Karma
    /// Thanda)": the worker's initials, from their name in any script, or
    /// the two letters set on their profile; never an `X` padding for a
    /// name that has letters.
    #[test]
    fn bt_initials_are_the_workers_in_any_script() {
        assert_eq!(initials("Karma Thanda", None), "KT");
        assert_eq!(initials("Sonam Dorji Wangmo", None), "SW");
        assert_eq!(initials("Pema", None), "PE");
        assert_eq!(initials("Дорджи Пема", None), "DP");
        assert_eq!(initials("Айгерім Сәулетова", None), "AS");
        assert_eq!(initials("Шолпан Жумабаева", None), "SZ");
        assert_eq!(initials("Émile Ørsted", None), "EO");
        assert_eq!(initials("  ", None), "XX");
        // Dzongkha script: nothing to read; the profile's letters instead.
        assert_eq!(initials("བསོད་ནམས་", None), "XX");
        assert_eq!(initials("བསོད་ནམས་", Some("SN")), "SN");
        assert_eq!(initials("Karma Thanda", Some("KAT")), "KAT");
    }
}
