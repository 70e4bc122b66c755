//! `export`: a form's submissions or a programme's cases as CSV (or a
//! .zip), de-identified unless `--identifying` with the disclosure's terms.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::shell::{open_keyed, shell_actor, with_db, Output};
use super::CliError;
use crate::audit::{self, Event, Origin};
use crate::config::Settings;
use crate::db::{self, DbConnection};
use crate::exports;
use crate::privacy::disclosures::{self, DisclosureTerms};

#[derive(Debug, Default, Args)]
pub struct ExportOptions {
    /// The file to write: CSV, or for a form a .zip with one CSV per
    /// repeat group besides.
    #[arg(long)]
    pub out: PathBuf,
    /// Received (forms) or opened (cases) on or after this day.
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// … and on or before this day.
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
    /// Site code.
    #[arg(long)]
    pub site: Option<String>,
    /// Start with a byte-order mark, for Excel.
    #[arg(long)]
    pub bom: bool,
    /// Keep names and other direct identifiers: a disclosure, which needs
    /// --legal-basis, --recipient and --purpose (logged and audited).
    #[arg(long)]
    pub identifying: bool,
    /// Only this case (its id); a disclosure by consent is of one case.
    #[arg(long)]
    pub case: Option<String>,
    /// The disclosure's terms (--legal-basis, --provision, --consent,
    /// --recipient, --purpose, --method).
    #[command(flatten)]
    pub terms: DisclosureTerms,
    /// Write cells that a spreadsheet would run as formulas (=, +, -, @…)
    /// as they are, for scripts; recorded on the audit row.
    #[arg(long)]
    pub no_formula_escape: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// One row per current submission of a form.
    Forms {
        form_id: String,
        /// Only this version.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        options: ExportOptions,
    },
    /// One row per case of a programme.
    Cases {
        #[arg(long)]
        programme: String,
        #[command(flatten)]
        options: ExportOptions,
    },
}

pub(super) fn run(settings: &Settings, cmd: ExportCommand) -> Result<(), CliError> {
    with_db(settings, |conn| export_command(conn, settings, cmd))
}

fn export_command(
    conn: &mut DbConnection,
    settings: &Settings,
    cmd: ExportCommand,
) -> Result<(), CliError> {
    let scope = exports::Scope::shell();
    let (options, written) = match cmd {
        ExportCommand::Forms {
            form_id,
            version,
            options,
        } => {
            let filter = exports::forms::FormFilter {
                from: options.from,
                to: options.to,
                site: options.site.clone(),
                version,
                bom: Some(options.bom),
                identifying: Some(options.identifying),
                case: options.case.clone(),
                terms: options.terms.clone(),
                formula_escape: Some(!options.no_formula_escape),
            };
            let plan = exports::forms::plan(conn, &scope, &form_id, &filter)?;
            let what = format!("form {form_id}");
            log_export(
                conn,
                &options,
                &what,
                plan.disclosure.as_ref(),
                plan.site_ids(),
                &plan.column_names(),
            )?;
            // A .zip adds one CSV per repeat group.
            let zipped = options.out.extension().is_some_and(|e| e == "zip");
            // A second connection, keyed like the first, reads beside it
            // (forms::write).
            let mut second = open_keyed(settings).ok();
            let written = Output::export(&options.out)?.write(|sink| {
                if zipped {
                    exports::archive::write(conn, second.as_mut(), &plan, sink)
                } else {
                    exports::forms::write(conn, second.as_mut(), &plan, sink)
                }
            })?;
            (options, written)
        }
        ExportCommand::Cases { programme, options } => {
            let filter = exports::cases::CaseFilter {
                programme: programme.clone(),
                from: options.from,
                to: options.to,
                site: options.site.clone(),
                bom: Some(options.bom),
                identifying: Some(options.identifying),
                case: options.case.clone(),
                terms: options.terms.clone(),
                formula_escape: Some(!options.no_formula_escape),
            };
            let plan = exports::cases::plan(conn, &scope, &filter)?;
            let what = format!("cases of {programme}");
            log_export(
                conn,
                &options,
                &what,
                plan.disclosure.as_ref(),
                plan.site_ids(),
                &plan.column_names(),
            )?;
            let written = Output::export(&options.out)?
                .write(|sink| exports::cases::write(conn, &plan, sink))?;
            (options, written)
        }
    };
    eprintln!("{written} rows written to {}", options.out.display());
    Ok(())
}

/// Logs an export before its first row is written: the audit row, and for
/// an identifying one the disclosure (KZ P4 asks for it beforehand).
fn log_export(
    conn: &mut DbConnection,
    options: &ExportOptions,
    what: &str,
    disclosure: Option<&disclosures::Checked>,
    site_ids: &[String],
    columns: &[String],
) -> Result<(), CliError> {
    let file = options.out.display().to_string();
    let note = exports::Formulas::from_param(Some(!options.no_formula_escape))
        .note()
        .map(|n| format!("; {n}"))
        .unwrap_or_default();
    db::write_tx(conn, |conn| {
        let detail = match disclosure {
            Some(checked) => {
                let sent = format!("{what}, columns: {}{note}", columns.join(" "));
                // The disclosure names a user account (or none); the audit
                // row below names the operating-system user.
                let id =
                    disclosures::record(conn, None, checked, site_ids, &sent, chrono::Utc::now())?;
                format!(
                    "{what}, identifying; disclosure {id} ({}){note}",
                    checked.basis
                )
            }
            None => format!("{what}, de-identified{note}"),
        };
        let mut event = Event::new(Some(shell_actor()), "exported")
            .object("file", &file)
            .detail(&detail);
        if let Some(checked) = disclosure {
            event = event.purpose(&checked.purpose);
        }
        audit::record(conn, &Origin::default(), event)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ExportCommand;
    use crate::cli::{Cli, Command};
    use crate::exports::cases::CaseFilter;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            ["casesync", "export", "cases", "--programme", "kz"]
                .iter()
                .chain(args),
        )
    }

    #[test]
    fn the_shell_takes_the_terms_the_api_takes() {
        let cli = parse(&[
            "--identifying",
            "--legal-basis",
            "consent",
            "--case",
            "c-1",
            "--consent",
            "a1,b2",
            "--recipient",
            "Kazakh Red Crescent",
            "--purpose",
            "family tracing abroad",
            "--method",
            "sealed envelope",
            "--out",
            "cases.csv",
        ])
        .unwrap();
        let Command::Export(ExportCommand::Cases { options, .. }) = cli.command else {
            panic!("not an export: {:?}", cli.command);
        };
        let query: CaseFilter = serde_urlencoded::from_str(
            "programme=kz&identifying=true&legal_basis=consent&case=c-1&consent=a1,b2\
             &recipient=Kazakh%20Red%20Crescent&purpose=family%20tracing%20abroad\
             &method=sealed%20envelope",
        )
        .unwrap();
        assert_eq!(options.terms, query.terms);
        assert_eq!(options.terms.consent.as_deref(), Some("a1,b2"));
        // Once each, as in a query string.
        let twice = parse(&["--consent", "a1", "--consent", "b2", "--out", "x.csv"]).unwrap_err();
        assert_eq!(twice.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
