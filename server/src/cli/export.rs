//! `export`: a form's submissions or a programme's cases as CSV (or a
//! .zip), de-identified unless `--identifying` with the disclosure's terms.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::shell::{open_keyed, shell_actor, with_db, Output};
use super::CliError;
use crate::config::Settings;
use crate::error::{AppError, AppResult};
use crate::exports::cases::CaseFilter;
use crate::exports::forms::FormFilter;
use crate::exports::{self, Destination, Planned, Request, Requester};
use crate::privacy::disclosures::DisclosureTerms;

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
    let (request, out) = match cmd {
        ExportCommand::Forms {
            form_id,
            version,
            options,
        } => {
            let filter = FormFilter {
                from: options.from,
                to: options.to,
                site: options.site,
                version,
                bom: Some(options.bom),
                identifying: Some(options.identifying),
                case: options.case,
                terms: options.terms,
                formula_escape: Some(!options.no_formula_escape),
            };
            let request = Request::Form {
                form_id,
                filter,
                // A .zip adds one CSV per repeat group.
                zipped: options.out.extension().is_some_and(|e| e == "zip"),
            };
            (request, options.out)
        }
        ExportCommand::Cases { programme, options } => {
            let filter = CaseFilter {
                programme,
                from: options.from,
                to: options.to,
                site: options.site,
                bom: Some(options.bom),
                identifying: Some(options.identifying),
                case: options.case,
                terms: options.terms,
                formula_escape: Some(!options.no_formula_escape),
            };
            (Request::Cases(filter), options.out)
        }
    };
    with_db(settings, |conn| {
        // A second connection, keyed like the first, reads beside it
        // (`exports::forms::write`).
        let mut second = match request {
            Request::Form { .. } => open_keyed(settings).ok(),
            Request::Cases(_) => None,
        };
        let file = out.display().to_string();
        let requester = Requester::Shell {
            actor: shell_actor(),
            file: &file,
        };
        let mut destination = ExportFile {
            out: &out,
            output: None,
        };
        let written = exports::disclose_and_stream(
            conn,
            second.as_mut(),
            requester,
            &request,
            &mut destination,
        )?;
        if let Some(output) = destination.output {
            output.finish()?;
        }
        eprintln!("{written} rows written to {}", out.display());
        Ok(())
    })
}

/// The export's file, created once the export is allowed and logged.
struct ExportFile<'a> {
    out: &'a Path,
    output: Option<Output>,
}

impl Destination for ExportFile<'_> {
    fn ready(&mut self, _: &Planned) -> AppResult<()> {
        // A file that cannot be made is said as the shell says it.
        let output = Output::export(self.out).map_err(|e| AppError::Internal(e.to_string()))?;
        self.output = Some(output);
        Ok(())
    }

    fn write(&mut self, chunk: Vec<u8>) -> bool {
        self.output.as_mut().is_some_and(|o| o.chunk(chunk))
    }
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
