//! `indicators`: a programme's monitoring indicators over a range, as
//! CSV or JSON (docs/indicators.md).

use std::path::PathBuf;

use clap::Args;

use super::shell::{self, shell_actor, with_db, Output};
use super::CliError;
use crate::audit::Event;
use crate::config::Settings;
use crate::db::DbConnection;
use crate::indicators;

#[derive(Debug, Args)]
pub struct IndicatorsArgs {
    /// kz or bt.
    pub programme: String,
    #[arg(long)]
    pub from: chrono::NaiveDate,
    #[arg(long)]
    pub to: chrono::NaiveDate,
    /// range (default), month, quarter or year.
    #[arg(long)]
    pub period: Option<String>,
    /// Breakdowns, comma-separated (e.g. sex,age_band).
    #[arg(long)]
    pub by: Option<String>,
    /// Only these indicators, comma-separated (timeliness ones: T-<rule>).
    #[arg(long)]
    pub indicator: Option<String>,
    /// Leave out the timeliness of each deadline rule.
    #[arg(long)]
    pub no_timeliness: bool,
    /// Site code.
    #[arg(long)]
    pub site: Option<String>,
    /// Hide small counts, as for publication.
    #[arg(long)]
    pub suppress: bool,
    /// csv (default) or json.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub(super) fn run(settings: &Settings, args: IndicatorsArgs) -> Result<(), CliError> {
    let threshold = settings.indicator_suppression_threshold;
    with_db(settings, |conn| report(conn, args, threshold))
}

fn report(conn: &mut DbConnection, args: IndicatorsArgs, threshold: u64) -> Result<(), CliError> {
    let query = indicators::ReportQuery {
        from: Some(args.from),
        to: Some(args.to),
        period: args.period,
        by: args.by,
        indicator: args.indicator,
        timeliness: Some(!args.no_timeliness),
        site: args.site,
        suppress: Some(args.suppress),
        format: None,
    };
    let request = indicators::plan(
        conn,
        &indicators::Audience::shell(),
        &args.programme,
        &query,
        threshold,
    )?;
    shell::audit(
        conn,
        Event::new(Some(shell_actor()), "indicators_reported")
            .object("programme", &request.programme.id)
            .detail(&indicators::describe(&request)),
    )?;
    let rows = indicators::report(conn, &request)?;
    let bytes = match args.format.as_str() {
        "csv" => indicators::csv(&request, &rows)?,
        "json" => {
            let mut text = serde_json::to_vec_pretty(&indicators::json(&request, &rows))
                .map_err(|e| CliError::App(e.to_string()))?;
            text.push(b'\n');
            text
        }
        other => return Err(CliError::App(format!("--format {other}: csv or json"))),
    };
    Output::open(args.out.as_deref())?.write(|sink| {
        sink(bytes);
        Ok(())
    })?;
    if let Some(path) = &args.out {
        eprintln!("{} rows written to {}", rows.len(), path.display());
    }
    Ok(())
}
