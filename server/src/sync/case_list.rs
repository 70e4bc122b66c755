//! The case list on a worker's phone (ODK Entities): the entity list
//! `cases.csv` that follow-up forms pick their case from. One row per case
//! the worker's phone holds under the sync feed's rule
//! (`cases::assigned_open`: open, assigned to them, at one of their sites),
//! with the columns ODK Entities needs (`name`, `label`, `__version`) and
//! what the programme's `on_phone` lists (docs/odk.md, "Cases on the
//! phone"; what it discloses: docs/security.md).

use md5::{Digest, Md5};

use crate::auth::Principal;
use crate::cases::{self, Case};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::Programme;

/// The case list as served: its bytes, their md5 (lowercase hex, for the
/// manifest's `hash`), and how many cases it names.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseList {
    pub csv: Vec<u8>,
    pub md5: String,
    pub cases: usize,
}

/// The file name of the case list in a manifest.
pub fn file_name() -> String {
    format!("{}.csv", crate::odk::xform::DATASET)
}

/// The label a case has on the phone: its number, else a neutral one made
/// from its id (a number is given when the case is opened, so this is for
/// a case whose programme gives none).
fn label(case: &Case) -> String {
    match &case.number {
        Some(number) if !number.is_empty() => number.clone(),
        _ => format!("Case {}", case.id.get(..8).unwrap_or(&case.id)),
    }
}

/// The case list of `who` for `programme`. One query; linear in the
/// worker's open cases, which the sync feed sends to their phone already.
pub fn case_list(
    conn: &mut DbConnection,
    who: &Principal,
    programme: &Programme,
) -> AppResult<CaseList> {
    let cases: Vec<Case> = cases::assigned_open(conn, who)?
        .into_iter()
        .filter(|c| c.programme == programme.id)
        .collect();
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let mut header = vec!["name", "label", "__version", "number"];
    header.extend(programme.on_phone.iter().map(String::as_str));
    out.write_record(&header).map_err(AppError::internal)?;
    for case in &cases {
        let mut row = vec![
            case.id.clone(),
            label(case),
            case.version.to_string(),
            case.number.clone().unwrap_or_default(),
        ];
        for column in &programme.on_phone {
            row.push(match column.as_str() {
                "state" => case.state.clone(),
                "opened_on" => case
                    .opened_at
                    .map(|at| programme.calendar.local_date(at.and_utc()).to_string())
                    .unwrap_or_default(),
                // `programmes::compile` admits no other column.
                other => return Err(AppError::internal(format!("on_phone column {other:?}"))),
            });
        }
        out.write_record(&row).map_err(AppError::internal)?;
    }
    let csv = out.into_inner().map_err(AppError::internal)?;
    Ok(CaseList {
        md5: hex::encode(Md5::digest(&csv)),
        csv,
        cases: cases.len(),
    })
}

/// The most ids one integrity check may ask about (Collect asks about the
/// cases of its list, one worker's).
pub const MAX_INTEGRITY_IDS: usize = 5000;

/// For each id Collect holds from the list, whether it left the list
/// (`deleted`): a case that exists but is no longer on `who`'s list
/// (closed, merged, reassigned, moved) is; an id the server does not know
/// is not (a case made offline whose form has not arrived yet).
pub fn deleted(
    conn: &mut DbConnection,
    who: &Principal,
    programme: &Programme,
    ids: &[String],
) -> AppResult<Vec<(String, bool)>> {
    if ids.len() > MAX_INTEGRITY_IDS {
        return Err(AppError::bad_request(format!(
            "ask about at most {MAX_INTEGRITY_IDS} cases at once"
        )));
    }
    let on_list: std::collections::HashSet<String> = cases::assigned_open(conn, who)?
        .into_iter()
        .filter(|c| c.programme == programme.id)
        .map(|c| c.id)
        .collect();
    ids.iter()
        .map(|id| {
            let gone = !on_list.contains(id) && cases::find(conn, id)?.is_some();
            Ok((id.clone(), gone))
        })
        .collect()
}
