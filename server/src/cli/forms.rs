//! Form definitions: `forms validate` a directory (and its fixtures),
//! `forms publish` a file as a new version, `forms list` what the database
//! or this binary holds, `forms facts` the fact catalogue.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::shell::{audit_change, with_db};
use super::CliError;
use crate::config::Settings;
use crate::db::{write_tx, DbConnection};
use crate::error::AppError;
use crate::forms::{self, check, definitions};

#[derive(Debug, Subcommand)]
pub enum FormsCommand {
    /// Check every definition in a directory (meta-schema, vocabulary,
    /// references) and, with --fixtures, run each form's fixtures.
    Validate {
        dir: PathBuf,
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Only this form id.
        #[arg(long)]
        only: Option<String>,
    },
    /// Publish one form file as a new version (shared blocks from the
    /// shipped definitions, or from --definitions).
    Publish {
        file: PathBuf,
        #[arg(long)]
        definitions: Option<PathBuf>,
    },
    /// The fact catalogue of the shipped forms, as Markdown: every `x-fact`
    /// and the fields that set it.
    Facts,
    /// List the forms and versions in the database, or with --shipped the
    /// definitions built into this binary (--markdown for docs).
    List {
        #[arg(long)]
        shipped: bool,
        #[arg(long)]
        markdown: bool,
    },
}

pub(super) fn run(settings: &Settings, cmd: FormsCommand) -> Result<(), CliError> {
    match cmd {
        FormsCommand::Validate {
            dir,
            fixtures,
            only,
        } => validate(&dir, fixtures.as_deref(), only.as_deref()),
        FormsCommand::Publish { file, definitions } => {
            with_db(settings, |conn| publish(conn, &file, definitions))
        }
        FormsCommand::List {
            shipped: true,
            markdown,
        } => {
            list_shipped(markdown);
            Ok(())
        }
        FormsCommand::List { .. } => with_db(settings, list),
        FormsCommand::Facts => {
            facts();
            Ok(())
        }
    }
}

fn publish(
    conn: &mut DbConnection,
    file: &Path,
    definitions: Option<PathBuf>,
) -> Result<(), CliError> {
    let mut resources = match definitions {
        Some(dir) => {
            definitions::from_dir(&dir)
                .map_err(|e| CliError::App(format!("{}: {e}", dir.display())))?
                .resources
        }
        None => Default::default(),
    };
    resources.fill_from(definitions::shipped_resources());
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::App(format!("{}: {e}", file.display())))?;
    let document: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::App(format!("{}: not valid JSON: {e}", file.display())))?;
    let compiled = check::check(&document, &resources)
        .map_err(|p| CliError::App(format!("{}:\n  {}", file.display(), p.join("\n  "))))?;
    // Its XForm is made at the next start (docs/odk.md); one ODK Collect
    // cannot ask is refused now.
    crate::odk::check(&compiled.document).map_err(|p| {
        CliError::App(format!(
            "{}: cannot be put on a phone (ODK Collect):\n  {}",
            file.display(),
            p.join("\n  ")
        ))
    })?;
    let info = write_tx(conn, |conn| {
        let info = forms::registry::publish(conn, &compiled, None)?;
        audit_change(
            conn,
            "form_published",
            "form",
            &format!("{} {}", info.form_id, info.version),
        )?;
        Ok::<_, AppError>(info)
    })?;
    println!(
        "published {} {} (sha256 {})",
        info.form_id, info.version, info.sha256
    );
    Ok(())
}

fn list(conn: &mut DbConnection) -> Result<(), CliError> {
    for form in forms::registry::list(conn)? {
        let versions: Vec<String> = form
            .versions
            .iter()
            .map(|v| {
                format!(
                    "{}{}",
                    v.version,
                    if v.status == "retired" {
                        " (retired)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        println!(
            "{:<34} current {:<10} versions {}",
            form.id,
            form.current_version.unwrap_or_else(|| "-".into()),
            versions.join(", ")
        );
    }
    Ok(())
}

fn validate(dir: &Path, fixtures: Option<&Path>, only: Option<&str>) -> Result<(), CliError> {
    let mut set =
        definitions::from_dir(dir).map_err(|e| CliError::App(format!("{}: {e}", dir.display())))?;
    // Shared blocks the directory does not have come from the shipped ones.
    set.resources.fill_from(definitions::shipped_resources());
    let mut failed = set.problems.len();
    for problem in &set.problems {
        println!("FAIL {problem}");
    }
    let mut checked = 0;
    for file in &set.forms {
        let id = file.document["x-form"]["id"].as_str().unwrap_or("?");
        if only.is_some_and(|o| o != id) {
            continue;
        }
        checked += 1;
        let compiled = match check::check(&file.document, &set.resources) {
            Ok(c) => c,
            Err(problems) => {
                failed += 1;
                println!("FAIL {} ({id})", file.path.display());
                for p in problems {
                    println!("     {p}");
                }
                continue;
            }
        };
        let mut line = format!(
            "ok   {} {} — {} fields",
            compiled.meta.id,
            compiled.meta.version,
            compiled.fields.len()
        );
        if let Some(root) = fixtures {
            let folder = root.join(&compiled.meta.id);
            if folder.is_dir() {
                let report = forms::fixtures::run(&compiled, &folder);
                if report.failures.is_empty() {
                    line.push_str(&format!(
                        "; fixtures ok ({} broken cases, {} listed fields)",
                        report.cases, report.fields_listed
                    ));
                } else {
                    failed += 1;
                    println!("FAIL {} fixtures ({})", compiled.meta.id, folder.display());
                    for f in report.failures {
                        println!("     {f}");
                    }
                    continue;
                }
            } else {
                line.push_str("; no fixtures");
            }
        }
        println!("{line}");
    }
    if checked == 0 {
        return Err(CliError::App("no form definitions matched".into()));
    }
    if failed > 0 {
        return Err(CliError::App(format!(
            "{failed} problem(s) in {checked} form(s)"
        )));
    }
    println!("{checked} form(s) checked, all good");
    Ok(())
}

fn list_shipped(markdown: bool) {
    let set = definitions::shipped();
    if markdown {
        println!("| id | programme | title | source | case | event | occurred_at |");
        println!("|---|---|---|---|---|---|---|");
    }
    for file in &set.forms {
        match check::check(&file.document, &set.resources) {
            Ok(c) => {
                let m = &c.meta;
                if markdown {
                    println!(
                        "| `{}` | {} | {} | {} | {} | `{}` | `{}` |",
                        m.id,
                        m.programme,
                        m.title,
                        m.source,
                        serde_json::to_value(m.case)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or(""),
                        m.event,
                        m.occurred_at
                    );
                } else {
                    println!("{:<34} {:<10} {}", m.id, m.version, m.title);
                }
            }
            Err(problems) => println!("INVALID {}: {}", file.path.display(), problems.join("; ")),
        }
    }
}

fn facts() {
    let set = definitions::shipped();
    let mut facts: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for file in &set.forms {
        let Ok(form) = check::check(&file.document, &set.resources) else {
            continue;
        };
        for field in &form.fields {
            if let Some(fact) = &field.fact {
                facts
                    .entry(fact.clone())
                    .or_default()
                    .push(format!("`{}` {}", form.meta.id, field.path));
            }
        }
    }
    println!("| fact | set by (form, field) |");
    println!("|---|---|");
    for (fact, fields) in facts {
        println!("| `{fact}` | {} |", fields.join("<br>"));
    }
}
