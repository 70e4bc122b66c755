//! Retention: `retention report`, the closed case files and until when
//! they must be kept (the server never deletes them).

use std::path::PathBuf;

use clap::Subcommand;

use super::shell::{self, shell_actor, with_db, Output, CLI_ORIGIN_DETAIL};
use super::CliError;
use crate::audit::Event;
use crate::config::Settings;
use crate::db::DbConnection;
use crate::privacy::retention;

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// One CSV line per closed case: until when its file is kept and
    /// whether it is due for archiving; by case number, never by name.
    Report {
        /// kz or bt (default: both).
        #[arg(long)]
        programme: Option<String>,
        /// Judge as of this day (YYYY-MM-DD; default: today).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// Write here (created 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) fn run(settings: &Settings, cmd: RetentionCommand) -> Result<(), CliError> {
    with_db(settings, |conn| report(conn, cmd))
}

fn report(conn: &mut DbConnection, cmd: RetentionCommand) -> Result<(), CliError> {
    let RetentionCommand::Report {
        programme,
        as_of,
        out,
    } = cmd;
    let query = retention::ReportQuery {
        programme,
        site_ids: None,
        as_of,
    };
    retention::check(&query)?;
    let now = chrono::Utc::now();
    // Audited before anything is written, like the other reports.
    shell::audit(
        conn,
        Event::new(Some(shell_actor()), "retention_reported")
            .object("programme", query.programme.as_deref().unwrap_or("all"))
            .detail(&format!(
                "{}; {CLI_ORIGIN_DETAIL}",
                retention::describe(&query)
            )),
    )?;
    // KZ retain-until dates are birthdays (quasi-identifying): 0600, as exports.
    let summary = Output::open(out.as_deref())?
        .write(|sink| retention::write_csv(conn, &query, now, sink))?;
    eprintln!("{}", summary.line());
    Ok(())
}
