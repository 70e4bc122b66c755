//! `collect`: the reference collector, a client that behaves like a phone
//! (sign in, sync, fill forms, push the encrypted queue). It needs no
//! server configuration and never opens the server's database.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliError;
use crate::client as collect;

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The collector's storage (session, synced forms, queue).
    #[arg(long, default_value = "collector", env = "CASESYNC_COLLECT_DIR")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: CollectCommand,
}

#[derive(Debug, Subcommand)]
pub enum CollectCommand {
    /// Sign in with a username (password from CASESYNC_COLLECT_PASSWORD,
    /// --password-file or standard input) or a device token (--token-file),
    /// and keep the session token. A one-time password is changed here.
    Login {
        /// e.g. https://casesync.example.org
        #[arg(long)]
        server: String,
        #[arg(long, required_unless_present = "token_file")]
        username: Option<String>,
        #[arg(long, conflicts_with = "token_file")]
        password_file: Option<PathBuf>,
        /// A file holding the device token (readable by its owner only).
        #[arg(long, conflicts_with = "username")]
        token_file: Option<PathBuf>,
        /// Read the new password (one line per attempt) from standard input
        /// when a one-time password must be changed and there is no terminal.
        #[arg(long)]
        new_password_stdin: bool,
    },
    /// Write a starting answers file for a synced form: every field with
    /// its type, whether it is required, when it applies and its values.
    Template {
        form: String,
        /// Another synced version than the newest.
        #[arg(long)]
        version: Option<String>,
        /// Write here (never over an existing file) instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Send refused submissions again (all, or those named by number),
    /// or replace one with a fixed answers file (--answers), then push.
    Retry {
        /// Numbers as `status` shows them (or instance ids).
        items: Vec<String>,
        /// Fill the one named item again from this fixed answers file.
        #[arg(long)]
        answers: Option<PathBuf>,
    },
    /// Sync form versions, keys and assigned cases.
    Pull {
        #[arg(long, default_value_t = 5)]
        retries: u32,
    },
    /// Fill a form from a JSON file of answers, encrypt it and queue it.
    Fill {
        form: String,
        answers: PathBuf,
        /// The case this form is about (made up for a form that opens one).
        #[arg(long = "case")]
        case_id: Option<String>,
        /// Another synced version than the newest.
        #[arg(long)]
        version: Option<String>,
        /// The instance id this submission corrects.
        #[arg(long)]
        supersedes: Option<String>,
        /// Queue this many distinct copies (load tests).
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// One for each case the last pull gave this collector (a form
        /// that follows up a case; load tests).
        #[arg(long, conflicts_with = "case_id")]
        each_case: bool,
    },
    /// Upload the queue; acknowledged submissions are never sent again.
    Push {
        /// Submissions per request (1 = one request each; up to 100).
        #[arg(long, default_value_t = 20)]
        batch: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Retries of a request that failed for a passing reason.
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Send to this address instead of the one signed in to. Given
        /// more than once (servers of one database), a request whose
        /// server cannot be reached goes to the next.
        #[arg(long = "server")]
        servers: Vec<String>,
        /// Print throughput and latency percentiles.
        #[arg(long)]
        stats: bool,
    },
    /// Send COUNT copies of a filled form as ODK Collect does (encrypted
    /// multipart to /odk/{programme}/submission), CONCURRENCY at a time,
    /// and print the rate: the ingest benchmark's OpenRosa mode.
    OdkPush {
        form: String,
        answers: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Ask for PROGRAMME's form list COUNT times as ODK Collect does,
    /// CONCURRENCY at a time, and print the latency: the ingest
    /// benchmark's formList figure.
    OdkFormlist {
        programme: String,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Counts of queued, sent and refused submissions, and each queued or
    /// refused one with its form, case and age (and why it was refused).
    Status,
}

pub(super) fn run(args: CollectArgs) -> Result<(), CliError> {
    collect_command(args).map_err(CliError::App)
}

fn collect_command(args: CollectArgs) -> Result<(), String> {
    let dir = args.dir.as_path();
    match args.command {
        CollectCommand::Login {
            server,
            username,
            password_file,
            token_file,
            new_password_stdin,
        } => {
            if let Some(file) = token_file {
                let username = collect::login_with_token(dir, &server, &file)?;
                println!("signed in to {server} as {username} with the device token");
                return Ok(());
            }
            let username = username.unwrap_or_default();
            let password = match (std::env::var("CASESYNC_COLLECT_PASSWORD"), password_file) {
                (Ok(p), _) if !p.is_empty() => p,
                (_, Some(file)) => std::fs::read_to_string(&file)
                    .map_err(|e| format!("{}: {e}", file.display()))?,
                _ => {
                    if std::io::stdin().is_terminal() {
                        console::Term::stderr()
                            .write_str(&format!("password for {username}: "))
                            .and_then(|()| console::Term::stderr().read_secure_line())
                            .map_err(|e| e.to_string())?
                    } else {
                        let mut line = String::new();
                        std::io::stdin()
                            .lock()
                            .read_line(&mut line)
                            .map_err(|e| e.to_string())?;
                        line
                    }
                }
            };
            collect::login(
                dir,
                &server,
                &username,
                password.trim_end_matches(['\r', '\n']),
                &collect::prompt::NewPasswordSource::pick(new_password_stdin),
            )?;
            println!("signed in to {server} as {username}");
        }
        CollectCommand::Template { form, version, out } => {
            let text = collect::template(dir, &form, version.as_deref())?;
            match out {
                None => print!("{text}"),
                Some(path) => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    // Filled in, it will hold a child's details: owner only.
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::AlreadyExists => format!(
                                "{} already exists: choose another name, or remove it if it holds nothing you need",
                                path.display()
                            ),
                            _ => format!("{}: {e}", path.display()),
                        })?;
                    file.write_all(text.as_bytes())
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    println!(
                        "wrote {}: fill in the answers, then `casesync collect fill {form} {}`",
                        path.display(),
                        path.display()
                    );
                }
            }
        }
        CollectCommand::Retry { items, answers } => {
            let again = collect::retry(dir, &items, answers.as_deref())?;
            if again == 0 {
                println!("nothing refused to send again");
                return Ok(());
            }
            println!("{again} item(s) queued again");
            return collect_command(CollectArgs {
                dir: args.dir.clone(),
                command: CollectCommand::Push {
                    batch: 20,
                    concurrency: 1,
                    retries: 5,
                    servers: Vec::new(),
                    stats: false,
                },
            });
        }
        CollectCommand::Pull { retries } => {
            let s = collect::pull(dir, retries)?;
            println!(
                "synced: {} form version(s), {} key(s), {} case(s), {} dropped; {} form document(s) downloaded",
                s.forms, s.keys, s.cases, s.dropped, s.downloaded
            );
        }
        CollectCommand::Fill {
            form,
            answers,
            case_id,
            version,
            supersedes,
            count,
            each_case,
        } => {
            let filled = collect::fill(
                dir,
                &collect::FillOptions {
                    form_id: form,
                    answers,
                    version,
                    case_id,
                    supersedes,
                    count,
                    each_case,
                },
            )?;
            if filled.len() == 1 {
                let f = &filled[0];
                println!(
                    "queued {}{}",
                    f.instance_id,
                    f.case_id
                        .as_deref()
                        .map(|c| format!(" (case {c})"))
                        .unwrap_or_default()
                );
            } else {
                println!("queued {} submissions", filled.len());
            }
        }
        CollectCommand::Push {
            batch,
            concurrency,
            retries,
            servers,
            stats,
        } => {
            let report = collect::push(
                dir,
                &collect::PushOptions {
                    batch,
                    concurrency,
                    retries,
                    servers,
                },
            )?;
            println!(
                "pushed: {} stored, {} already stored, {} refused, {} attachment(s); {} still queued",
                report.created, report.repeated, report.refused, report.attachments, report.left
            );
            if !report.refusals.is_empty() {
                println!("refused (kept in {}/failed):", dir.display());
                for refusal in &report.refusals {
                    println!("  {refusal}");
                }
                println!(
                    "fix the answers file and run `casesync collect retry NUMBER --answers FILE`, \
                     or, once the cause is fixed on the server, `casesync collect retry`"
                );
            }
            if stats {
                let mut latencies = report.latencies.clone();
                latencies.sort();
                let accepted = report.created + report.repeated;
                let secs = report.elapsed.as_secs_f64();
                println!(
                    "{accepted} accepted in {secs:.2} s: {:.0} accepted/s; request latency p50 {:.1} ms, p99 {:.1} ms ({} requests)",
                    accepted as f64 / secs.max(1e-9),
                    collect::quantile(&latencies, 0.50).as_secs_f64() * 1e3,
                    collect::quantile(&latencies, 0.99).as_secs_f64() * 1e3,
                    latencies.len()
                );
            }
            if report.left > 0 {
                return Err(format!(
                    "{} submission(s) still queued; push again when the server is reachable",
                    report.left
                ));
            }
        }
        CollectCommand::OdkPush {
            form,
            answers,
            count,
            concurrency,
        } => super::odk_push::run(dir, &form, &answers, count, concurrency)?,
        CollectCommand::OdkFormlist {
            programme,
            count,
            concurrency,
        } => super::odk_push::formlist(dir, &programme, count, concurrency)?,
        CollectCommand::Status => {
            let status = collect::status(dir)?;
            println!(
                "{} queued, {} sent, {} refused (see {}/failed)",
                status.queued.len(),
                status.sent,
                status.refused.len(),
                dir.display()
            );
            for (title, lines) in [("queued", &status.queued), ("refused", &status.refused)] {
                if !lines.is_empty() {
                    println!("{title}:");
                    for line in lines.iter() {
                        println!("  {line}");
                    }
                }
            }
        }
    }
    Ok(())
}
