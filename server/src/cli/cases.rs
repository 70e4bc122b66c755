//! Cases: `cases overdue`, the morning list of a site's deadlines.

use clap::Subcommand;

use super::shell::{audit_change, with_db};
use super::CliError;
use crate::auth::{sites, users};
use crate::cases::fold::Status;
use crate::cases::views;
use crate::config::Settings;
use crate::db::DbConnection;

#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// The morning list: a site's overdue (and, with --due-soon, nearly
    /// due) deadlines, by case number — never by name.
    Overdue {
        /// Site code (as in `sites list`) or id.
        #[arg(long)]
        site: String,
        /// Also list deadlines due soon.
        #[arg(long)]
        due_soon: bool,
    },
    /// Check the database after load (several servers, one killed): every
    /// submission the collectors hold a receipt for stored exactly once,
    /// case numbers unique per site and without gaps, every case equal to
    /// a fold of its events from scratch. Exits 1 on any problem.
    Check {
        /// A collector's directory (`casesync collect --dir`) whose
        /// acknowledged submissions must be stored; more than once for
        /// several.
        #[arg(long = "acknowledged-by")]
        collectors: Vec<std::path::PathBuf>,
    },
}

pub(super) fn run(settings: &Settings, cmd: CasesCommand) -> Result<(), CliError> {
    if let CasesCommand::Check { collectors } = cmd {
        let mut acknowledged = Vec::new();
        for dir in &collectors {
            acknowledged.extend(crate::client::acknowledged(dir).map_err(CliError::App)?);
        }
        return with_db(settings, |conn| check(conn, &acknowledged));
    }
    with_db(settings, |conn| overdue(conn, cmd))
}

fn check(conn: &mut DbConnection, acknowledged: &[String]) -> Result<(), CliError> {
    let report = crate::cases::check::run(conn, acknowledged)?;
    println!(
        "{} acknowledged submission(s), {} stored; {} case(s), {} case number(s) over {} counter(s)",
        report.acknowledged, report.stored, report.cases, report.numbers, report.counters
    );
    for problem in &report.problems {
        println!("  {problem}");
    }
    if !report.passed() {
        return Err(CliError::App(format!(
            "{} problem(s) found",
            report.problems.len()
        )));
    }
    println!("every acknowledged submission stored once; case numbers unique and without gaps; every case equal to its refold");
    Ok(())
}

fn overdue(conn: &mut DbConnection, cmd: CasesCommand) -> Result<(), CliError> {
    let CasesCommand::Overdue { site, due_soon } = cmd else {
        return Ok(());
    };
    let found = sites::resolve(conn, &site)?
        .ok_or_else(|| CliError::App(format!("no site with code or id {site:?}")))?;
    let filter = views::DeadlineFilter {
        status: (!due_soon).then(|| "overdue".to_string()),
        ..Default::default()
    };
    let now = chrono::Utc::now();
    let items = views::due_in(
        conn,
        &crate::auth::policy::CaseScope::Sites(vec![found.id.clone()]),
        &filter,
        now,
    )?;
    audit_change(conn, "deadlines_listed", "site", &found.id)?;
    if items.is_empty() {
        println!("{}: nothing overdue", found.code);
        return Ok(());
    }
    let names: std::collections::HashMap<String, String> =
        users::list(conn, Some(std::slice::from_ref(&found.id)))?
            .into_iter()
            .map(|u| (u.id, u.username))
            .collect();
    println!(
        "{:<10} {:<12} {:<12} {:<23} {:<12} what",
        "case", "rule", "status", "due (local time)", "assigned"
    );
    for item in items {
        let status = match (item.status, item.late) {
            (Status::Overdue, Some(late)) => format!("{} late", late.short()),
            (other, _) => other.as_str().replace('_', " "),
        };
        // `2026-06-18 12:00 +06:00`: the programme's time, with its offset.
        let due = chrono::DateTime::parse_from_rfc3339(&item.due_local)
            .map_or(item.due_local.clone(), |t| {
                t.format("%Y-%m-%d %H:%M %:z").to_string()
            });
        println!(
            "{:<10} {:<12} {:<12} {:<23} {:<12} {}",
            item.case_number.as_deref().unwrap_or("-"),
            item.rule,
            status,
            due,
            item.assigned_to
                .as_ref()
                .and_then(|id| names.get(id))
                .map_or("-", String::as_str),
            item.title
        );
    }
    Ok(())
}
