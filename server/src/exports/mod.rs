//! Exports: form submissions and cases as CSV, streamed a page at a time
//! so a million rows cost no more memory than a thousand. De-identified
//! unless the role may and the caller states a purpose. Both doors (the
//! API and `casesync export`) go through [`disclose_and_stream`], which
//! checks, logs the disclosure and the audit row, then streams.

pub mod archive;
pub mod cases;
mod flatten;
pub mod forms;
pub mod pseudonym;

use chrono::{NaiveDateTime, Utc};

use crate::audit::{self, Event, Origin};
use crate::auth::{sites, Principal};
use crate::cases::Case;
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
pub use crate::forms::columns::{Column, Privacy};
use crate::privacy::disclosures::{self, Checked, DisclosureTerms};
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

/// A stored UTC time as RFC 3339 (what `push_utc_text` writes, checked
/// against it in the tests).
#[cfg(test)]
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
    terms: &DisclosureTerms,
) -> AppResult<Option<Checked>> {
    match privacy {
        Privacy::Deidentified => Ok(None),
        Privacy::Identifying => {
            disclosures::check(conn, programme, case, terms, "CSV download", Utc::now()).map(Some)
        }
    }
}

/// What is asked for.
#[derive(Debug, Clone)]
pub enum Request {
    /// A form's current submissions: a CSV, or `zipped` a .zip with one
    /// CSV per repeat group besides.
    Form {
        form_id: String,
        filter: forms::FormFilter,
        zipped: bool,
    },
    /// A programme's cases, a row each.
    Cases(cases::CaseFilter),
}

/// An export that is allowed, its terms checked: what it will write.
#[derive(Debug)]
pub enum Planned {
    Form {
        plan: forms::FormExport,
        zipped: bool,
    },
    Cases(cases::CaseExport),
}

impl Planned {
    /// Its file's name: the form or the programme, never a name.
    pub fn file_name(&self) -> String {
        match self {
            Planned::Form { plan, zipped: true } => format!("{}.zip", plan.form_id),
            Planned::Form { plan, .. } => format!("{}.csv", plan.form_id),
            Planned::Cases(plan) => format!("{}-cases.csv", plan.programme),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Planned::Form { zipped: true, .. } => "application/zip",
            _ => "text/csv; charset=utf-8",
        }
    }

    /// What it is, for the disclosure log and the shell's audit row.
    fn what(&self) -> String {
        match self {
            Planned::Form { plan, .. } => format!("form {}", plan.form_id),
            Planned::Cases(plan) => format!("cases of {}", plan.programme),
        }
    }

    fn disclosure(&self) -> Option<&Checked> {
        match self {
            Planned::Form { plan, .. } => plan.disclosure.as_ref(),
            Planned::Cases(plan) => plan.disclosure.as_ref(),
        }
    }

    fn formulas(&self) -> Formulas {
        match self {
            Planned::Form { plan, .. } => plan.formulas,
            Planned::Cases(plan) => plan.formulas,
        }
    }

    fn site_ids(&self) -> &[String] {
        match self {
            Planned::Form { plan, .. } => plan.site_ids(),
            Planned::Cases(plan) => plan.site_ids(),
        }
    }

    fn column_names(&self) -> Vec<String> {
        match self {
            Planned::Form { plan, .. } => plan.column_names(),
            Planned::Cases(plan) => plan.column_names(),
        }
    }

    /// Writes it to `sink`; a form export reads on `second` too when there
    /// is one (`forms::write`). Returns the rows written.
    fn write(
        &self,
        conn: &mut DbConnection,
        second: Option<&mut DbConnection>,
        sink: impl FnMut(Vec<u8>) -> bool + Send,
    ) -> AppResult<u64> {
        match self {
            Planned::Form { plan, zipped: true } => archive::write(conn, second, plan, sink),
            Planned::Form { plan, .. } => forms::write(conn, second, plan, sink),
            Planned::Cases(plan) => cases::write(conn, plan, sink),
        }
    }
}

/// Who asks for an export and through which door: this decides what they
/// may export and how the disclosure log and the audit row name it.
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    /// A signed-in user (the API): the disclosure names their account, the
    /// audit row is `form_exported` of the form or `cases_exported` of the
    /// programme, with the request's origin.
    User {
        who: &'a Principal,
        origin: &'a Origin,
    },
    /// The server's shell (`casesync export`), with every site: the
    /// disclosure names no account, the audit row is `exported` of the
    /// file written, by `actor` (the operating-system user).
    Shell { actor: &'a Principal, file: &'a str },
}

/// Where an export goes: an HTTP response, a file.
pub trait Destination: Send {
    /// The export is allowed and logged; its first byte comes next. An
    /// error here ends it.
    fn ready(&mut self, export: &Planned) -> AppResult<()>;
    /// One chunk; false when it can take no more (the export stops).
    fn write(&mut self, chunk: Vec<u8>) -> bool;
}

/// Runs an export for `requester`: plans it (the access policy, and for an
/// identifying one the disclosure's terms: KZ P1, P4; BT Annex E), logs it
/// in the same transaction (the disclosure, with the columns as what went,
/// and the audit row: KZ P4 asks for them before anything leaves), then
/// streams it to `destination`. Returns the rows written.
pub fn disclose_and_stream(
    conn: &mut DbConnection,
    second: Option<&mut DbConnection>,
    requester: Requester<'_>,
    request: &Request,
    destination: &mut dyn Destination,
) -> AppResult<u64> {
    let planned = write_tx(conn, |conn| {
        let scope = match requester {
            Requester::User { who, .. } => Scope::of(who)?,
            Requester::Shell { .. } => Scope::shell(),
        };
        let planned = match request {
            Request::Form {
                form_id,
                filter,
                zipped,
            } => Planned::Form {
                plan: forms::plan(conn, &scope, form_id, filter)?,
                zipped: *zipped,
            },
            Request::Cases(filter) => Planned::Cases(cases::plan(conn, &scope, filter)?),
        };
        log_export(conn, requester, &planned)?;
        Ok::<_, AppError>(planned)
    })?;
    destination.ready(&planned)?;
    planned.write(conn, second, |chunk| destination.write(chunk))
}

/// An export's audit row and, for an identifying one, its entry in the
/// disclosure log. Both say when formulas were left as they are
/// (`formula_escape=false`).
fn log_export(
    conn: &mut DbConnection,
    requester: Requester<'_>,
    export: &Planned,
) -> AppResult<()> {
    let what = export.what();
    let note = export
        .formulas()
        .note()
        .map(|n| format!("; {n}"))
        .unwrap_or_default();
    let privacy = match export.disclosure() {
        Some(checked) => {
            let sent = format!("{what}, columns: {}{note}", export.column_names().join(" "));
            let account = match requester {
                Requester::User { who, .. } => Some(who),
                Requester::Shell { .. } => None,
            };
            let id =
                disclosures::record(conn, account, checked, export.site_ids(), &sent, Utc::now())?;
            format!("identifying; disclosure {id} ({}){note}", checked.basis)
        }
        None => format!("de-identified{note}"),
    };
    let shell_origin = Origin::default();
    let (origin, event, detail) = match (requester, export) {
        (Requester::User { who, origin }, Planned::Form { plan, .. }) => (
            origin,
            Event::new(Some(who), "form_exported").object("form", &plan.form_id),
            privacy,
        ),
        (Requester::User { who, origin }, Planned::Cases(plan)) => (
            origin,
            Event::new(Some(who), "cases_exported").object("programme", &plan.programme),
            privacy,
        ),
        (Requester::Shell { actor, file }, _) => (
            &shell_origin,
            Event::new(Some(actor), "exported").object("file", file),
            format!("{what}, {privacy}"),
        ),
    };
    let mut event = event.detail(&detail);
    if let Some(checked) = export.disclosure() {
        event = event.purpose(&checked.purpose);
    }
    audit::record(conn, origin, event)
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

    use super::cases::CaseFilter;
    use super::forms::FormFilter;
    use super::{Formulas, Privacy};

    /// As actix's `web::Query` reads them.
    fn query<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
        serde_urlencoded::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn an_export_query_reads_its_filters_and_the_disclosure_terms_side_by_side() {
        let filter: FormFilter = query(
            "from=2026-01-01&to=2026-03-31&site=KZ-CAM-ALA&version=2021.1&bom=true\
             &identifying=true&case=c-1&legal_basis=required_by_law\
             &provision=Code%20on%20Marriage%20art.%2076&consent=a1,b2\
             &recipient=Almaty+district+court&purpose=court%20report%20for%20case%201\
             &method=sealed%20envelope&formula_escape=false",
        )
        .unwrap();
        assert_eq!(filter.from, "2026-01-01".parse().ok());
        assert_eq!(filter.to, "2026-03-31".parse().ok());
        assert_eq!(filter.site.as_deref(), Some("KZ-CAM-ALA"));
        assert_eq!(filter.version.as_deref(), Some("2021.1"));
        assert_eq!(
            (filter.bom, filter.identifying, filter.formula_escape),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(filter.case.as_deref(), Some("c-1"));
        let terms = &filter.terms;
        assert_eq!(terms.legal_basis.as_deref(), Some("required_by_law"));
        assert_eq!(terms.provision.as_deref(), Some("Code on Marriage art. 76"));
        assert_eq!(terms.consent.as_deref(), Some("a1,b2"));
        assert_eq!(terms.recipient.as_deref(), Some("Almaty district court"));
        assert_eq!(terms.purpose.as_deref(), Some("court report for case 1"));
        assert_eq!(terms.method.as_deref(), Some("sealed envelope"));

        let filter: CaseFilter =
            query("programme=kz&identifying=false&consent=id1%2Cid2&purpose=").unwrap();
        assert_eq!(filter.programme, "kz");
        assert_eq!(filter.identifying, Some(false));
        assert_eq!(filter.terms.consent.as_deref(), Some("id1,id2"));
        assert_eq!(filter.terms.purpose.as_deref(), Some(""), "said, empty");
        assert_eq!(filter.terms.legal_basis, None);
        let none: FormFilter = query("").unwrap();
        assert_eq!((none.bom, none.terms.recipient), (None, None));
    }

    #[test]
    fn an_export_query_is_refused_in_serdes_words_naming_every_parameter_it_takes() {
        let unknown = query::<FormFilter>("identifying=true&legal-basis=consent").unwrap_err();
        assert!(
            unknown.starts_with("unknown field `legal-basis`, expected one of `from`, `to`"),
            "{unknown}"
        );
        for name in [
            "`version`",
            "`formula_escape`",
            "`legal_basis`",
            "`provision`",
            "`consent`",
            "`recipient`",
            "`purpose`",
            "`method`",
        ] {
            assert!(unknown.contains(name), "{name} in {unknown}");
        }
        let unknown = query::<CaseFilter>("programme=kz&terms=x").unwrap_err();
        assert!(unknown.contains("`programme`") && unknown.contains("`recipient`"));
        // `consent` takes its ids comma-separated, once; no parameter twice.
        for (text, said) in [
            ("consent=a&consent=b", "duplicate field `consent`"),
            (
                "purpose=a&legal_basis=consent&purpose=b",
                "duplicate field `purpose`",
            ),
            ("bom=true&bom=false", "duplicate field `bom`"),
            ("bom=yes", "provided string was not `true` or `false`"),
            ("identifying=1", "provided string was not `true` or `false`"),
            ("from=2026-13-01", "input is out of range"),
            ("to=", "premature end of input"),
        ] {
            assert_eq!(query::<FormFilter>(text).unwrap_err(), said, "{text}");
        }
        assert_eq!(
            query::<CaseFilter>("identifying=true").unwrap_err(),
            "missing field `programme`"
        );
    }

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
