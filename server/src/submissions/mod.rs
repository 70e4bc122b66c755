//! A stored submission: the envelope a phone sends ([`envelope`]), its
//! statuses, the export cells stored beside it ([`cells`]), and the copy
//! of its case's id, site and number each row keeps. Owns the
//! `submissions`, `attachments` and `submission_cells` tables; the pipeline
//! that fills them is `ingest`, above `cases`.

pub mod cells;
pub mod envelope;

use diesel::prelude::*;

use crate::db::schema::submissions;
use crate::db::DbConnection;
use crate::error::AppResult;
pub use envelope::{AttachmentDeclaration, Envelope};

pub const COMPLETE: &str = "complete";
pub const AWAITING_ATTACHMENTS: &str = "awaiting_attachments";
/// About a case the server has not seen yet: stored and held until the
/// form that opens it arrives (`ingest::held`).
pub const PENDING_CASE: &str = "pending_case";
/// Held, then refused when its case opened: its sender may not work on
/// that case. Kept and listed to coordinators (`ingest::held`).
pub const REFUSED: &str = "refused";

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
