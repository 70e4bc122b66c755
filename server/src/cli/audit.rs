//! The hash-chained audit log: `audit verify` it (against an anchor),
//! `audit anchor` its head, `audit export` its rows as CSV.

use std::path::PathBuf;

use clap::Subcommand;

use super::shell::{self, open_to_verify, shell_actor, with_db, Output};
use super::CliError;
use crate::audit::{self, Event};
use crate::config::Settings;
use crate::db::DbConnection;
use crate::exports;
use crate::server;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the whole chain; exits non-zero and lists every problem
    /// when a row was edited, deleted or inserted around the server.
    Verify {
        /// A head printed earlier by `audit anchor` (SEQ:HASH): fails when
        /// the chain no longer holds it (rows cut off the end).
        #[arg(long)]
        anchor: Option<audit::Anchor>,
    },
    /// Verify the chain and print its head as SEQ:HASH, to keep somewhere
    /// the database's editors cannot reach (for `audit verify --anchor`).
    Anchor,
    /// Write the chained rows (oldest first, with their hashes) as CSV.
    Export {
        #[arg(long)]
        out: PathBuf,
        /// A day (YYYY-MM-DD, UTC) or an RFC 3339 time.
        #[arg(long)]
        from: Option<String>,
        /// A day (the whole day) or an RFC 3339 time.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// A username or user id, or a shell actor (`os:alice`).
        #[arg(long)]
        actor: Option<String>,
        /// Write cells that a spreadsheet would run as formulas as they
        /// are (for scripts); recorded on the audit row.
        #[arg(long)]
        no_formula_escape: bool,
    },
}

pub(super) fn run(settings: &Settings, cmd: AuditCommand) -> Result<(), CliError> {
    match cmd {
        // Verify reports what it finds, including a key file that does
        // not match, rather than refusing to open the database.
        AuditCommand::Verify { .. } | AuditCommand::Anchor => {
            let (key, mut conn) = open_to_verify(settings)?;
            server::prepare_database(&mut conn)?;
            audit_command(&mut conn, key.as_ref(), cmd)
        }
        AuditCommand::Export { .. } => with_db(settings, |conn| audit_command(conn, None, cmd)),
    }
}

fn audit_command(
    conn: &mut DbConnection,
    key: Option<&audit::ChainKey>,
    cmd: AuditCommand,
) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Anchor => {
            let found = audit::verify(conn, key, None)?;
            if !found.is_intact() {
                return Err(CliError::App(format!(
                    "the audit chain is broken ({} problem(s)); run `casesync audit verify`: an anchor of a broken chain proves nothing",
                    found.problems.len() as u64 + found.more_problems
                )));
            }
            match audit::head(conn)? {
                Some(head) => println!("{head}"),
                None => return Err(CliError::App("the audit chain is empty".into())),
            }
            Ok(())
        }
        AuditCommand::Verify { anchor } => {
            let found = audit::verify(conn, key, anchor.as_ref())?;
            if found.is_intact() {
                println!(
                    "audit chain intact: {} rows, head seq {} hash {}",
                    found.rows, found.head_seq, found.head_hash
                );
                return Ok(());
            }
            for problem in &found.problems {
                println!("{problem}");
            }
            if found.more_problems > 0 {
                println!("… and {} more problems", found.more_problems);
            }
            Err(CliError::App(format!(
                "audit chain broken: {} problem(s) in {} rows (head seq {} hash {})",
                found.problems.len() as u64 + found.more_problems,
                found.rows,
                found.head_seq,
                found.head_hash
            )))
        }
        AuditCommand::Export {
            out,
            from,
            to,
            action,
            actor,
            no_formula_escape,
        } => {
            let formulas = exports::Formulas::from_param(Some(!no_formula_escape));
            let mut filter = audit::AuditQuery {
                from,
                to,
                action,
                actor,
                ..Default::default()
            }
            .export_filter()?;
            filter.resolve_actor(conn)?;
            let written = Output::export(&out)?
                .write(|sink| audit::write_csv(conn, &filter, formulas, sink))?;
            let detail = match formulas.note() {
                Some(note) => format!("{}; {note}", filter.describe()),
                None => filter.describe(),
            };
            shell::audit(
                conn,
                Event::new(Some(shell_actor()), "audit_exported")
                    .object("file", &out.display().to_string())
                    .detail(&detail),
            )?;
            eprintln!("{written} rows written to {}", out.display());
            Ok(())
        }
    }
}
