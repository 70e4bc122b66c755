//! Exports: form submissions and cases as CSV, streamed a page at a time
//! so a million rows cost no more memory than a thousand. De-identified
//! unless the role may and the caller states a purpose (audited by the
//! handler).

pub mod archive;
pub mod cases;
mod flatten;
pub mod forms;
pub mod pseudonym;

use chrono::{NaiveDateTime, Utc};

use crate::auth::{sites, Principal};
use crate::cases::Case;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
pub use crate::forms::columns::{Column, Privacy};
use crate::privacy::disclosures::{self, Checked, Terms};
pub use crate::sheet::{push_cell, Chunk, Formulas};

/// The header line, after a byte-order mark when Excel needs one.
pub(crate) fn header_chunk(header: &[String], bom: bool) -> AppResult<Vec<u8>> {
    // Our own column names: nothing to neutralise.
    let mut chunk = Chunk::new(Formulas::Escaped);
    chunk.record(header)?;
    let mut bytes = chunk.bytes()?;
    if bom {
        bytes.splice(0..0, "\u{feff}".bytes());
    }
    Ok(bytes)
}

/// A `from`–`to` filter of whole days (UTC) as a half-open range of times.
pub(crate) fn day_range(
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> (Option<NaiveDateTime>, Option<NaiveDateTime>) {
    let start = |d: chrono::NaiveDate| d.and_time(chrono::NaiveTime::MIN);
    (from.map(start), to.and_then(|d| d.succ_opt()).map(start))
}

/// The local day of a form's event time, written as RFC 3339 or as a
/// bare date.
pub(crate) fn event_day(text: &str, time_zone: chrono_tz::Tz) -> Option<chrono::NaiveDate> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&time_zone).date_naive())
        .ok()
        .or_else(|| text.parse().ok())
}

/// A stored UTC time as RFC 3339, or in a de-identified export as its
/// UTC day.
pub(crate) fn stamp(t: NaiveDateTime, privacy: Privacy) -> String {
    match privacy {
        Privacy::Identifying => utc(t),
        Privacy::Deidentified => t.date().to_string(),
    }
}

/// A stored UTC time as RFC 3339.
pub(crate) fn utc(t: NaiveDateTime) -> String {
    // Written by hand: chrono's formatter interprets a format string each
    // time, a cost that shows at a million rows.
    use chrono::{Datelike, Timelike};
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A UTC time as the database gives it as text (`2026-03-02 05:40:07`,
/// maybe with a fraction: SQLite stores it so, PostgreSQL casts it so
/// with `DateStyle` ISO), appended as RFC 3339 to the second — or, in a
/// de-identified export, as its day. Rearranged, not parsed: parsing three
/// times a row costs as much as the rest of it.
pub(crate) fn push_utc_text(out: &mut Vec<u8>, stored: &str, privacy: Privacy, formulas: Formulas) {
    let b = stored.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let shaped = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b' ' | b'T')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b.len() == 19 || b[19] == b'.');
    match (shaped, privacy) {
        (true, Privacy::Deidentified) => out.extend_from_slice(&b[..10]),
        (true, Privacy::Identifying) => {
            out.extend_from_slice(&b[..10]);
            out.push(b'T');
            out.extend_from_slice(&b[11..19]);
            out.push(b'Z');
        }
        // Not a shape this code knows: as it is (never nothing) when
        // identifying, its leading day (or nothing) when not.
        (false, Privacy::Identifying) => push_cell(out, b, formulas),
        (false, Privacy::Deidentified) => {
            if let Some(day) = stored
                .get(..10)
                .filter(|d| d.parse::<chrono::NaiveDate>().is_ok())
            {
                out.extend_from_slice(day.as_bytes());
            }
        }
    }
}

/// Who is exporting: the sites whose cases they may export, and whether
/// they may have identifying data.
#[derive(Debug, Clone)]
pub struct Scope {
    pub site_ids: Option<Vec<String>>,
    pub may_identify: bool,
}

impl Scope {
    /// What the access policy lets `who` export.
    pub fn of(who: &Principal) -> AppResult<Scope> {
        let rights = crate::auth::policy::export(who)?;
        Ok(Scope {
            site_ids: Some(rights.site_ids),
            may_identify: rights.may_identify,
        })
    }

    /// The server's own shell (`casesync export`): every site.
    pub fn shell() -> Scope {
        Scope {
            site_ids: None,
            may_identify: true,
        }
    }

    fn covers(&self, site_id: &str) -> bool {
        self.site_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|s| s == site_id))
    }
}

/// De-identified unless asked and allowed (the terms of an identifying
/// export are checked by [`disclosure`] once its programme is known).
pub fn privacy(scope: &Scope, identifying: Option<bool>) -> AppResult<Privacy> {
    if identifying != Some(true) {
        return Ok(Privacy::Deidentified);
    }
    if !scope.may_identify {
        return Err(AppError::Forbidden(
            "analysts export de-identified data only".into(),
        ));
    }
    Ok(Privacy::Identifying)
}

/// An identifying export is a disclosure: its legal basis, recipient,
/// purpose and method checked (KZ P1, P4; BT Annex E), and for one resting
/// on consent, the case's consents.
pub(crate) fn disclosure(
    conn: &mut DbConnection,
    privacy: Privacy,
    programme: &str,
    case: Option<&Case>,
    terms: &Terms,
) -> AppResult<Option<Checked>> {
    match privacy {
        Privacy::Deidentified => Ok(None),
        Privacy::Identifying => {
            disclosures::check(conn, programme, case, terms, "CSV download", Utc::now()).map(Some)
        }
    }
}

/// The case an export is narrowed to, which must be of its sites.
pub(crate) fn narrowed_case(
    conn: &mut DbConnection,
    site_ids: &[String],
    case_id: Option<&str>,
) -> AppResult<Option<Case>> {
    let Some(id) = case_id else { return Ok(None) };
    let case = crate::cases::find(conn, id)?
        .ok_or_else(|| AppError::invalid_field("/case", "no such case"))?;
    if !site_ids.contains(&case.site_id) {
        return Err(AppError::Forbidden("not a case of your sites".into()));
    }
    Ok(Some(case))
}

/// The sites of `programme` within `scope`, narrowed to the site `code`.
pub(crate) fn export_sites(
    all: &[sites::Site],
    scope: &Scope,
    programme: &str,
    code: Option<&str>,
) -> AppResult<Vec<String>> {
    let mut ids: Vec<String> = all
        .iter()
        .filter(|s| s.programme == programme && scope.covers(&s.id))
        .map(|s| s.id.clone())
        .collect();
    if let Some(code) = code {
        let site = all
            .iter()
            .find(|s| s.code == code || s.id == code)
            .ok_or_else(|| AppError::invalid_field("/site", "no such site"))?;
        if !ids.contains(&site.id) {
            return Err(AppError::Forbidden("not one of your sites".into()));
        }
        ids = vec![site.id.clone()];
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::{Formulas, Privacy};

    #[test]
    fn stored_time_text_is_rearranged_to_rfc3339() {
        let cases = [
            ("2026-03-02 05:40:07", "2026-03-02T05:40:07Z"),
            ("2026-03-02 05:40:07.123456", "2026-03-02T05:40:07Z"),
            ("2026-03-02T05:40:07.5", "2026-03-02T05:40:07Z"),
            // Unknown shapes are kept as they are.
            ("02/03/2026 05:40", "02/03/2026 05:40"),
            ("2026-03-02 05:40:07+00", "2026-03-02 05:40:07+00"),
        ];
        for (stored, written) in cases {
            let mut out = Vec::new();
            super::push_utc_text(&mut out, stored, Privacy::Identifying, Formulas::Escaped);
            assert_eq!(String::from_utf8(out).unwrap(), written, "{stored}");
            // De-identified: the day.
            let mut day = Vec::new();
            super::push_utc_text(&mut day, stored, Privacy::Deidentified, Formulas::Escaped);
            let day = String::from_utf8(day).unwrap();
            assert!(
                day.is_empty() || (day.len() == 10 && written.starts_with(&day)),
                "{day}"
            );
        }
    }

    #[test]
    fn times_are_written_as_rfc3339_utc_seconds() {
        for text in [
            "2026-03-02T05:40:07Z",
            "0999-12-31T23:59:59Z",
            "2026-11-23T00:00:00Z",
        ] {
            let t: DateTime<Utc> = text.parse().unwrap();
            let written = super::utc(t.naive_utc() + chrono::Duration::microseconds(999));
            assert_eq!(written, text);
            assert_eq!(
                written,
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
    }
}
