//! A stored submission: the envelope a phone sends ([`envelope`]), its
//! statuses, the export cells and repeat groups stored beside it
//! ([`cells`], [`repeats`]), and the copy
//! of its case's id, site and number each row keeps. Owns the
//! `submissions`, `attachments`, `submission_cells`,
//! `submission_cells_deidentified` and `submission_repeats` tables; the pipeline
//! that fills them is `ingest`, above `cases`.

pub mod cells;
pub mod envelope;
pub mod repeats;

use diesel::prelude::*;

use chrono::NaiveDateTime;

use crate::db::schema::{submission_cells, submission_cells_deidentified, submissions};
use crate::db::DbConnection;
use crate::error::AppResult;
pub use cells::StoredCells;
pub use envelope::{AttachmentDeclaration, Envelope};

pub const COMPLETE: &str = "complete";
pub const AWAITING_ATTACHMENTS: &str = "awaiting_attachments";
/// About a case the server has not seen yet: stored and held until the
/// form that opens it arrives (`ingest::held`).
pub const PENDING_CASE: &str = "pending_case";
/// Held, then refused when its case opened: its sender may not work on
/// that case. Kept and listed to coordinators (`ingest::held`).
pub const REFUSED: &str = "refused";
/// From ODK Collect, decrypted and well-formed, but its answers are ones
/// its form version refuses: an encrypted form cannot be edited on the
/// phone, so it is stored (not processed) for a coordinator, with the
/// problems found (`problems`), instead of refused (`ingest::held`).
pub const QUARANTINED: &str = "quarantined";
/// A quarantined form a coordinator dismissed, with a reason (audited).
pub const DISMISSED: &str = "dismissed";
/// A quarantined form a coordinator corrected: kept as the phone sent it,
/// its `superseded_by` the accepted version, stored as a submission of its
/// own (`ingest::held::correct`).
pub const CORRECTED: &str = "corrected";

/// A new submission's row, as ingest stores it.
#[derive(Debug, Insertable)]
#[diesel(table_name = submissions)]
pub struct NewSubmission<'a> {
    pub instance_id: &'a str,
    pub form_id: &'a str,
    pub form_version: &'a str,
    pub case_id: Option<&'a str>,
    pub submitted_by: &'a str,
    pub device_id: &'a str,
    pub started_at: Option<NaiveDateTime>,
    pub completed_at: NaiveDateTime,
    pub received_at: NaiveDateTime,
    pub kid: &'a str,
    pub raw_jwe: &'a str,
    pub payload: &'a str,
    pub content_sha256: &'a str,
    pub base_case_version: Option<i64>,
    pub supersedes: Option<&'a str>,
    pub status: &'a str,
    /// Copies of its case's site and number, for exports (migration
    /// 000015); kept in step by [`renumber_case`] and [`relink_case`].
    pub site_id: Option<&'a str>,
    pub case_number: Option<&'a str>,
    /// A held form's case, and the event it will add to it (JSON).
    pub pending_case_id: Option<&'a str>,
    pub pending_event: Option<&'a str>,
    /// A quarantined form's problems (JSON: pointers and messages).
    pub problems: Option<&'a str>,
}

/// Stores a new submission's row and the export cells beside it; a
/// quarantined one has none (its answers are not the form's: no export
/// shows them).
pub fn insert(
    conn: &mut DbConnection,
    row: &NewSubmission<'_>,
    cells: Option<&StoredCells>,
    repeats: Option<&repeats::StoredRepeats>,
) -> AppResult<()> {
    diesel::insert_into(submissions::table)
        .values(row)
        .execute(conn)?;
    let Some(cells) = cells else {
        return Ok(());
    };
    if let Some(stored) = repeats {
        repeats::insert(conn, row.form_id, row.received_at, row.instance_id, stored)?;
    }
    diesel::insert_into(submission_cells::table)
        .values((
            submission_cells::form_id.eq(row.form_id),
            submission_cells::received_at.eq(row.received_at),
            submission_cells::instance_id.eq(row.instance_id),
            submission_cells::layout.eq(&cells.layout),
            submission_cells::event_day.eq(&cells.event_day),
            submission_cells::identifying.eq(&cells.identifying),
        ))
        .execute(conn)?;
    diesel::insert_into(submission_cells_deidentified::table)
        .values((
            submission_cells_deidentified::form_id.eq(row.form_id),
            submission_cells_deidentified::received_at.eq(row.received_at),
            submission_cells_deidentified::instance_id.eq(row.instance_id),
            submission_cells_deidentified::layout.eq(&cells.layout),
            submission_cells_deidentified::event_day.eq(&cells.event_day),
            submission_cells_deidentified::deidentified.eq(&cells.deidentified),
        ))
        .execute(conn)?;
    Ok(())
}

/// Marks `earlier` as replaced by the submission `by` (an edit).
pub fn supersede(conn: &mut DbConnection, earlier: &str, by: &str) -> AppResult<()> {
    diesel::update(submissions::table.find(earlier))
        .set(submissions::superseded_by.eq(by))
        .execute(conn)?;
    Ok(())
}

/// Gives the submissions of `case_id` the case's new number (a
/// readmission numbers the case anew; exports read the copy).
pub fn renumber_case(
    conn: &mut DbConnection,
    case_id: &str,
    number: Option<&str>,
) -> AppResult<()> {
    diesel::update(submissions::table.filter(submissions::case_id.eq(case_id)))
        .set(submissions::case_number.eq(number))
        .execute(conn)?;
    Ok(())
}

/// Moves the submissions of `case_id` to the case they were merged into:
/// its id, site and number.
pub fn relink_case(
    conn: &mut DbConnection,
    case_id: &str,
    to_case: &str,
    to_site: &str,
    to_number: Option<&str>,
) -> AppResult<()> {
    diesel::update(submissions::table.filter(submissions::case_id.eq(case_id)))
        .set((
            submissions::case_id.eq(to_case),
            submissions::site_id.eq(to_site),
            submissions::case_number.eq(to_number),
        ))
        .execute(conn)?;
    Ok(())
}

/// A stored submission as its readers see it: which form, about which
/// case, who sent it when, and its answers.
#[derive(Debug, Clone)]
pub struct Stored {
    pub instance_id: String,
    pub form_id: String,
    pub form_version: String,
    pub case_id: Option<String>,
    pub submitted_by: String,
    pub completed_at: NaiveDateTime,
    pub received_at: NaiveDateTime,
    /// An edit replaced it.
    pub superseded_by: Option<String>,
    pub status: String,
    /// The envelope's `data`.
    pub data: serde_json::Value,
}

/// The columns [`Stored`] is made of, with the whole envelope.
#[derive(Queryable, Selectable)]
#[diesel(table_name = submissions)]
struct StoredRow {
    instance_id: String,
    form_id: String,
    form_version: String,
    case_id: Option<String>,
    submitted_by: String,
    completed_at: NaiveDateTime,
    received_at: NaiveDateTime,
    superseded_by: Option<String>,
    status: String,
    payload: String,
}

/// Submission `instance_id`, if stored. The caller checks that the reader
/// may see its case.
pub fn stored(conn: &mut DbConnection, instance_id: &str) -> AppResult<Option<Stored>> {
    let Some(row) = submissions::table
        .find(instance_id)
        .select(StoredRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let mut envelope: serde_json::Value =
        serde_json::from_str(&row.payload).map_err(crate::error::AppError::internal)?;
    Ok(Some(Stored {
        instance_id: row.instance_id,
        form_id: row.form_id,
        form_version: row.form_version,
        case_id: row.case_id,
        submitted_by: row.submitted_by,
        completed_at: row.completed_at,
        received_at: row.received_at,
        superseded_by: row.superseded_by,
        status: row.status,
        data: envelope["data"].take(),
    }))
}
