//! The `casesync` command line: serve, migrate, and the administration
//! commands an operator needs on the server itself.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::audit::{self, Event, Origin};
use crate::auth::{passwords, sites, tokens, users, Role};
use crate::cases::fold::Status;
use crate::cases::views;
use crate::client as collect;
use crate::config::{DatabaseTarget, Settings};
use crate::crypto::kek::Kek;
use crate::crypto::keys;
use crate::db::{self, write_tx, DbConnection};
use crate::error::AppError;
use crate::exports;
use crate::forms::{self, check, definitions};
use crate::indicators;
use crate::privacy::disclosures;
use crate::server;

#[derive(Debug, Parser)]
#[command(
    name = "casesync",
    version,
    about = "Child-protection case sync server"
)]
pub struct Cli {
    /// Configuration file (optional; CASESYNC_* variables override it).
    #[arg(
        long,
        global = true,
        default_value = "casesync.toml",
        env = "CASESYNC_CONFIG"
    )]
    pub config: PathBuf,
    /// The server's data directory (overrides `data_dir` of the
    /// configuration; the SQLite database is `<data_dir>/casesync.db`).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (migrates and bootstraps an empty database first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage sites (organisation units).
    #[command(subcommand)]
    Sites(SitesCommand),
    /// Manage device tokens for field workers' phones.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Check, list and publish form definitions.
    #[command(subcommand)]
    Forms(FormsCommand),
    /// Programme encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A reference collector that behaves like a phone: sign in, sync,
    /// fill forms, push the encrypted queue.
    Collect(CollectArgs),
    /// Cases and their deadlines.
    #[command(subcommand)]
    Cases(CasesCommand),
    /// Export form submissions or cases as CSV (de-identified unless
    /// --identifying with --purpose).
    #[command(subcommand)]
    Export(ExportCommand),
    /// The programme's monitoring indicators over a range, as CSV
    /// (docs/indicators.md): e.g. `indicators kz --from 2026-01-01
    /// --to 2026-03-31 --by sex,age_band`.
    Indicators(IndicatorsArgs),
    /// The hash-chained audit log: verify it, or export it as CSV.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Closed case files and until when they must be kept (nothing is
    /// ever deleted by the server).
    #[command(subcommand)]
    Retention(RetentionCommand),
    // --- Data at rest, backup and restore (#14 items 8, 17) ---
    /// Write a consistent copy of the embedded database (encrypted, taken
    /// while the server runs) with the sealed keys, but never master.key
    /// or the passphrase, to one new file (docs/operations.md).
    Backup {
        /// The backup file to create (it must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Unpack a backup into a new, empty data directory.
    Restore {
        /// A file written by `casesync backup`.
        file: PathBuf,
        /// The data directory to create; refused when it is not empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// Copy this master.key into it (kept apart from the backups).
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Rotate the key-encryption key: re-seal the private keys and the
    /// audit key and re-encrypt the embedded database, all or nothing.
    /// Stop the server(s) first.
    Rekey {
        /// With a passphrase KEK: a file holding the new passphrase (set it
        /// in the configuration afterwards).
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
    },
}

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
    /// Why (at least 10 characters).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Only this case (its id); a disclosure by consent is of one case.
    #[arg(long)]
    pub case: Option<String>,
    /// KZ: required_by_law, unicef_me, consent, staff_harm. BT: consent,
    /// court_order, mandatory_report, immediate_safety_risk,
    /// non_disclosure_agreement.
    #[arg(long)]
    pub legal_basis: Option<String>,
    /// The provision of law, court order or agreement, where the basis
    /// needs one.
    #[arg(long)]
    pub provision: Option<String>,
    /// Consent record ids, comma-separated (--legal-basis consent).
    #[arg(long)]
    pub consent: Option<String>,
    /// To whom the file goes.
    #[arg(long)]
    pub recipient: Option<String>,
    /// How it is handed over (default: "CSV download").
    #[arg(long)]
    pub method: Option<String>,
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
}

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
        /// Send to this address instead of the one signed in to.
        #[arg(long)]
        server: Option<String>,
        /// Print throughput and latency percentiles.
        #[arg(long)]
        stats: bool,
    },
    /// Counts of queued, sent and refused submissions, and each queued or
    /// refused one with its form, case and age (and why it was refused).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new current key for a programme (kz or bt); older keys stay
    /// to decrypt what phones encrypted before they synced the new one.
    Rotate { programme: String },
    /// List every key (public parts only).
    List,
}

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

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; prints a one-time password to change at first login.
    Add(AddUser),
    /// List users.
    List,
    /// Disable a user and revoke all their tokens.
    Disable { username: String },
    /// Set a new password (read from standard input, or generated and printed);
    /// the user must change it at next login.
    SetPassword { username: String },
}

#[derive(Debug, Args)]
pub struct AddUser {
    pub username: String,
    #[arg(long)]
    pub role: Role,
    /// Site code (repeatable), e.g. --site KZ-CAM-ALA.
    #[arg(long = "site")]
    pub sites: Vec<String>,
    #[arg(long)]
    pub display_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Create a site.
    Add {
        code: String,
        name: String,
        #[arg(long)]
        programme: String,
        /// Organisation acronym used in BT case codes.
        #[arg(long)]
        org_code: Option<String>,
    },
    /// List sites.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a device token for a field worker; printed once.
    Create {
        username: String,
        #[arg(long)]
        label: String,
        #[arg(long)]
        days: Option<i64>,
    },
    /// List device tokens.
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

impl clap::builder::ValueParserFactory for Role {
    type Parser = clap::builder::ValueParser;
    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|s: &str| s.parse::<Role>())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Start(#[from] server::StartError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("{0}")]
    App(String),
}

impl From<AppError> for CliError {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Validation { errors, detail }
            | AppError::InvalidData { errors, detail, .. }
            | AppError::BadRequest { errors, detail } => {
                let parts: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{} {}", e.pointer.trim_start_matches('/'), e.message))
                    .collect();
                CliError::App(if parts.is_empty() {
                    detail
                } else {
                    parts.join("; ")
                })
            }
            AppError::Internal(cause) => CliError::App(cause),
            other => CliError::App(other.to_string()),
        }
    }
}

const CLI_ORIGIN_DETAIL: &str = "cli";

pub fn run(cli: Cli) -> Result<(), CliError> {
    // Everything this process creates (data directory, database, keys,
    // exports) is its owner's alone, before anything is created.
    // SAFETY: umask only sets the process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    match cli.command {
        // The collector is a client: it needs no server configuration.
        Command::Collect(args) => collect_command(args).map_err(CliError::App),
        command => server_command(&cli.config, cli.data_dir, command),
    }
}

fn server_command(
    config: &Path,
    data_dir: Option<PathBuf>,
    command: Command,
) -> Result<(), CliError> {
    let mut settings = Settings::load(config)?;
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    crate::telemetry::init(settings.log_format);
    match command {
        Command::Collect(args) => collect_command(args).map_err(CliError::App),
        Command::Serve => Ok(server::serve(settings)?),
        Command::Migrate => {
            // Keyed: the embedded database is encrypted.
            let storage = server::open_storage(&settings)?;
            let mut conn = db::open_one(&storage.database)?;
            let applied = db::run_migrations(&mut conn)?;
            println!("{applied} migration(s) applied; the database is current");
            Ok(())
        }
        Command::Users(cmd) => with_db(&settings, |conn| users_command(conn, cmd)),
        Command::Sites(cmd) => with_db(&settings, |conn| sites_command(conn, cmd)),
        Command::Cases(cmd) => with_db(&settings, |conn| cases_command(conn, cmd)),
        Command::Export(cmd) => {
            // The second reading connection is keyed like the first.
            let database = server::open_storage(&settings)?.database;
            with_db(&settings, |conn| export_command(conn, &database, cmd))
        }
        // Verify reports what it finds, including a key file that does
        // not match, rather than refusing to open the database.
        Command::Audit(cmd @ (AuditCommand::Verify { .. } | AuditCommand::Anchor)) => {
            let key = server::audit_key(&settings)?;
            let storage = server::open_storage(&settings)?;
            let mut conn = db::open_one(&storage.database)?;
            server::prepare_database(&mut conn)?;
            audit_command(&mut conn, key.as_ref(), cmd)
        }
        Command::Audit(cmd) => with_db(&settings, |conn| audit_command(conn, None, cmd)),
        Command::Backup { out } => backup_command(&settings, &out),
        Command::Restore {
            file,
            data_dir,
            master_key,
        } => restore_command(&settings, &file, &data_dir, master_key.as_deref()),
        Command::Rekey {
            new_passphrase_file,
        } => rekey_command(&settings, new_passphrase_file.as_deref()),
        Command::Retention(cmd) => with_db(&settings, |conn| retention_command(conn, cmd)),
        Command::Indicators(args) => {
            let threshold = settings.indicator_suppression_threshold;
            with_db(&settings, |conn| indicators_command(conn, args, threshold))
        }
        Command::Forms(FormsCommand::Validate {
            dir,
            fixtures,
            only,
        }) => forms_validate(&dir, fixtures.as_deref(), only.as_deref()),
        Command::Forms(FormsCommand::List {
            shipped: true,
            markdown,
        }) => {
            forms_list_shipped(markdown);
            Ok(())
        }
        Command::Forms(FormsCommand::Facts) => {
            forms_facts();
            Ok(())
        }
        Command::Forms(cmd) => with_db(&settings, |conn| forms_command(conn, cmd)),
        Command::Keys(cmd) => {
            let bits = settings.rsa_key_bits;
            with_db(&settings, |conn| {
                // After with_db's checks: a lost master.key is not remade here.
                let kek = Kek::load(&settings).map_err(|e| CliError::App(e.to_string()))?;
                keys_command(conn, &kek, bits, cmd)
            })
        }
        Command::Tokens(cmd) => {
            let ttl = settings.device_token_ttl_days;
            with_db(&settings, |conn| tokens_command(conn, cmd, ttl))
        }
    }
}

fn with_db(
    settings: &Settings,
    f: impl FnOnce(&mut DbConnection) -> Result<(), CliError>,
) -> Result<(), CliError> {
    // One connection, no pool: a pool's background threads may still be
    // connecting when a short command exits.
    let mut conn = open_existing(settings)?;
    f(&mut conn)
}

/// Opens the database `serve` or `migrate` made, never a new one: run in
/// the wrong directory, a command would otherwise write users and one-time
/// passwords into an empty database no server reads.
fn open_existing(settings: &Settings) -> Result<DbConnection, CliError> {
    let target = settings.database_target()?;
    let missing = |looked: String| {
        CliError::App(format!(
            "no casesync database {looked}. Run this where the server runs, or point at its \
             database: --data-dir DIR (the server's data_dir), --config FILE (its casesync.toml), \
             or CASESYNC_DATABASE_URL. Only `casesync serve` and `casesync migrate` create one."
        ))
    };
    if let DatabaseTarget::Sqlite(path) = &target {
        if !path.is_file() {
            let shown = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            return Err(missing(format!("at {}", shown.display())));
        }
    }
    if let DatabaseTarget::Postgres(_) = &target {
        // An empty PostgreSQL database has no tables yet. Never echo its
        // URL: it may carry a password.
        let mut plain = db::open_one(&target)?;
        if sites::count(&mut plain).is_err() {
            return Err(missing("in the PostgreSQL database of database_url".into()));
        }
    }
    // Keyed (SQLCipher), migrated, and the audit chain's key checked.
    Ok(server::open_database(settings)?)
}

/// Who acts from the shell, for the audit log: the operating-system
/// account (`os:alice`), with the server's rights.
fn shell_actor() -> &'static crate::auth::Principal {
    static ACTOR: std::sync::OnceLock<crate::auth::Principal> = std::sync::OnceLock::new();
    ACTOR.get_or_init(|| {
        let name = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|n| !n.trim().is_empty()))
            .or_else(|| {
                use std::os::unix::fs::MetadataExt;
                let uid = std::fs::metadata("/proc/self").ok()?.uid();
                Some(format!("uid-{uid}"))
            })
            .unwrap_or_else(|| "unknown".into());
        crate::auth::Principal {
            user_id: format!("os:{}", name.trim()),
            username: name.trim().to_string(),
            role: Role::Admin,
            site_ids: Vec::new(),
            token_id: String::new(),
            token_created_by: None,
            must_change_password: false,
        }
    })
}

// --- Data at rest, backup and restore (#14 items 8, 17) ---

fn backup_command(settings: &Settings, out: &Path) -> Result<(), CliError> {
    let manifest =
        crate::backup::backup(settings, out).map_err(|e| CliError::App(e.to_string()))?;
    let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    println!(
        "backup written to {} ({} files, {bytes} bytes{})",
        out.display(),
        manifest.files.len(),
        manifest
            .audit_head
            .as_ref()
            .map(|h| format!("; audit head {h}"))
            .unwrap_or_default()
    );
    if manifest.database == "postgresql" {
        println!("the database is PostgreSQL: it is not in this file; back it up with pg_dump or continuous archiving (docs/operations.md)");
    }
    println!(
        "it opens only with the key-encryption key ({}), which is not in it: keep that apart from the backups",
        manifest.kek
    );
    Ok(())
}

fn restore_command(
    settings: &Settings,
    file: &Path,
    data_dir: &Path,
    master_key: Option<&Path>,
) -> Result<(), CliError> {
    let manifest = crate::backup::restore(file, data_dir, master_key)
        .map_err(|e| CliError::App(e.to_string()))?;
    println!(
        "restored {} file(s) of a backup made {} into {}",
        manifest.files.len(),
        manifest.created_at,
        data_dir.display()
    );
    let restored = Settings {
        data_dir: data_dir.to_path_buf(),
        ..settings.clone()
    };
    let kek_present = restored.key_passphrase.is_some()
        || restored.key_passphrase_file.is_some()
        || data_dir.join(crate::crypto::kek::MASTER_KEY_FILE).exists();
    if !kek_present || manifest.database != "sqlite" {
        println!(
            "next: put the key-encryption key ({}) in place, then start casesync with data_dir = {}",
            manifest.kek,
            data_dir.display()
        );
        return Ok(());
    }
    // The key opens it and the audit chain holds together up to the head
    // the backup recorded.
    let key = server::audit_key(&restored)?;
    let storage = server::open_storage(&restored)?;
    let mut conn = db::open_one(&storage.database)?;
    let anchor = manifest
        .audit_head
        .as_deref()
        .map(str::parse::<audit::Anchor>)
        .transpose()
        .map_err(CliError::App)?;
    let found = audit::verify(&mut conn, key.as_ref(), anchor.as_ref())?;
    if !found.is_intact() {
        for problem in &found.problems {
            println!("{problem}");
        }
        return Err(CliError::App(
            "the restored audit chain does not verify".into(),
        ));
    }
    println!(
        "the database opens with the key-encryption key; audit chain intact ({} rows, head seq {})",
        found.rows, found.head_seq
    );
    println!(
        "next: start casesync with data_dir = {}",
        data_dir.display()
    );
    Ok(())
}

fn rekey_command(settings: &Settings, new_passphrase_file: Option<&Path>) -> Result<(), CliError> {
    let new_passphrase = new_passphrase_file
        .map(|file| {
            std::fs::read_to_string(file)
                .map(|p| p.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| CliError::App(format!("reading {}: {e}", file.display())))
        })
        .transpose()?;
    let done = crate::server::rekey::rekey(settings, new_passphrase)?;
    println!(
        "key-encryption key rotated: {} private key(s) re-sealed{}{}",
        done.private_keys,
        if done.audit_key_resealed {
            ", audit.key re-sealed"
        } else {
            ""
        },
        if done.database_reencrypted {
            ", database re-encrypted"
        } else {
            ""
        }
    );
    if new_passphrase_file.is_some() {
        println!("set key_passphrase (or key_passphrase_file) to the new passphrase before the next start");
    } else {
        println!("back up the new data/master.key now; the old one no longer opens anything");
    }
    Ok(())
}

fn audit_cli(conn: &mut DbConnection, action: &str, kind: &str, id: &str) -> Result<(), AppError> {
    audit::record(
        conn,
        &Origin::default(),
        Event::new(Some(shell_actor()), action)
            .object(kind, id)
            .detail(CLI_ORIGIN_DETAIL),
    )
}

fn user_by_name(conn: &mut DbConnection, username: &str) -> Result<users::User, CliError> {
    users::resolve(conn, username)?
        .ok_or_else(|| CliError::App(format!("no user with username or id {username:?}")))
}

fn users_command(conn: &mut DbConnection, cmd: UsersCommand) -> Result<(), CliError> {
    match cmd {
        UsersCommand::Add(add) => {
            let mut site_ids = Vec::new();
            for code in &add.sites {
                let site = sites::resolve(conn, code)?
                    .ok_or_else(|| CliError::App(format!("no site with code or id {code:?}")))?;
                site_ids.push(site.id);
            }
            let created = write_tx(conn, |conn| {
                let created = users::create(
                    conn,
                    users::NewUser {
                        username: add.username,
                        display_name: add.display_name,
                        role: add.role,
                        site_ids,
                        password: None,
                    },
                )?;
                audit_cli(conn, "user_created", "user", &created.user.id)?;
                Ok::<_, AppError>(created)
            })?;
            println!(
                "created {} ({}); one-time password: {}",
                created.user.username,
                created.user.role,
                created.one_time_password.unwrap_or_default()
            );
        }
        UsersCommand::List => {
            let all_sites = sites::list(conn, None)?;
            println!("{:<24} {:<13} {:<7} sites", "username", "role", "active");
            for u in users::list(conn, None)? {
                let codes: Vec<&str> = u
                    .site_ids
                    .iter()
                    .filter_map(|id| all_sites.iter().find(|s| &s.id == id))
                    .map(|s| s.code.as_str())
                    .collect();
                println!(
                    "{:<24} {:<13} {:<7} {}",
                    u.username,
                    u.role.as_str(),
                    u.active,
                    codes.join(",")
                );
            }
        }
        UsersCommand::Disable { username } => {
            let user = user_by_name(conn, &username)?;
            write_tx(conn, |conn| {
                users::update(
                    conn,
                    &user.id,
                    users::UserChanges {
                        active: Some(false),
                        ..Default::default()
                    },
                )?;
                audit_cli(conn, "user_updated", "user", &user.id)
            })?;
            println!("disabled {username}; all of its tokens are revoked");
        }
        UsersCommand::SetPassword { username } => {
            let user = user_by_name(conn, &username)?;
            let stdin = std::io::stdin();
            let (password, generated) = if stdin.is_terminal() {
                (passwords::generate(), true)
            } else {
                let mut line = String::new();
                stdin
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| CliError::App(format!("reading the password: {e}")))?;
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if line.is_empty() {
                    (passwords::generate(), true)
                } else {
                    (line, false)
                }
            };
            write_tx(conn, |conn| {
                users::reset_password(conn, &user.id, &password)?;
                audit_cli(conn, "password_reset", "user", &user.id)
            })?;
            if generated {
                println!("one-time password for {username}: {password}");
            } else {
                println!("password set for {username}; it must be changed at next login");
            }
        }
    }
    Ok(())
}

fn export_command(
    conn: &mut DbConnection,
    target: &db::Database,
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
                purpose: options.purpose.clone(),
                case: options.case.clone(),
                legal_basis: options.legal_basis.clone(),
                provision: options.provision.clone(),
                consent: options.consent.clone(),
                recipient: options.recipient.clone(),
                method: options.method.clone(),
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
            // A second connection reads beside the first (forms::write).
            let mut second = db::open_one(target).ok();
            let written = export_to_file(&options, |sink| {
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
                purpose: options.purpose.clone(),
                case: options.case.clone(),
                legal_basis: options.legal_basis.clone(),
                provision: options.provision.clone(),
                consent: options.consent.clone(),
                recipient: options.recipient.clone(),
                method: options.method.clone(),
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
            let written =
                export_to_file(&options, |sink| exports::cases::write(conn, &plan, sink))?;
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
            let options = ExportOptions {
                out,
                ..Default::default()
            };
            let written = export_to_file(&options, |sink| {
                audit::write_csv(conn, &filter, formulas, sink)
            })?;
            let detail = match formulas.note() {
                Some(note) => format!("{}; {note}", filter.describe()),
                None => filter.describe(),
            };
            audit::record(
                conn,
                &Origin::default(),
                Event::new(Some(shell_actor()), "audit_exported")
                    .object("file", &options.out.display().to_string())
                    .detail(&detail),
            )?;
            eprintln!("{written} rows written to {}", options.out.display());
            Ok(())
        }
    }
}

fn retention_command(conn: &mut DbConnection, cmd: RetentionCommand) -> Result<(), CliError> {
    use crate::privacy::retention;
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
    audit::record(
        conn,
        &Origin::default(),
        Event::new(Some(shell_actor()), "retention_reported")
            .object("programme", query.programme.as_deref().unwrap_or("all"))
            .detail(&format!(
                "{}; {CLI_ORIGIN_DETAIL}",
                retention::describe(&query)
            )),
    )?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // KZ retain-until dates are birthdays (quasi-identifying): 0600, as exports.
    let (mut writer, name): (Box<dyn Write>, String) = match &out {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| CliError::App(format!("{}: {e}", path.display())))?;
            (
                Box::new(std::io::BufWriter::new(file)),
                path.display().to_string(),
            )
        }
        None => (Box::new(std::io::stdout().lock()), "standard output".into()),
    };
    let mut failed = None;
    let summary =
        retention::write_csv(conn, &query, now, |chunk| match writer.write_all(&chunk) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
    if let Some(e) = failed.or_else(|| writer.flush().err()) {
        return Err(CliError::App(format!("{name}: {e}")));
    }
    eprintln!("{}", summary.line());
    Ok(())
}

fn indicators_command(
    conn: &mut DbConnection,
    args: IndicatorsArgs,
    threshold: u64,
) -> Result<(), CliError> {
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
    audit::record(
        conn,
        &Origin::default(),
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
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes)
                .map_err(|e| CliError::App(format!("{}: {e}", path.display())))?;
            eprintln!("{} rows written to {}", rows.len(), path.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| CliError::App(e.to_string()))?;
        }
    }
    Ok(())
}

/// Writes an export to `options.out` (created 0600: it may hold case
/// data), with a spinner counting rows on the terminal.
fn export_to_file(
    options: &ExportOptions,
    write: impl FnOnce(&mut (dyn FnMut(Vec<u8>) -> bool + Send)) -> Result<u64, AppError>,
) -> Result<u64, CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&options.out)
        .map_err(|e| CliError::App(format!("{}: {e}", options.out.display())))?;
    let mut file = std::io::BufWriter::new(file);
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("a valid template"),
    );
    let mut failed = None;
    let mut bytes = 0u64;
    let written = write(&mut |chunk: Vec<u8>| {
        bytes += chunk.len() as u64;
        progress.set_message(format!("{} written", indicatif::HumanBytes(bytes)));
        progress.tick();
        match file.write_all(&chunk) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    progress.finish_and_clear();
    if let Some(e) = failed {
        return Err(CliError::App(format!("{}: {e}", options.out.display())));
    }
    file.flush()
        .map_err(|e| CliError::App(format!("{}: {e}", options.out.display())))?;
    Ok(written)
}

fn cases_command(conn: &mut DbConnection, cmd: CasesCommand) -> Result<(), CliError> {
    let CasesCommand::Overdue { site, due_soon } = cmd;
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
    audit_cli(conn, "deadlines_listed", "site", &found.id)?;
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

fn sites_command(conn: &mut DbConnection, cmd: SitesCommand) -> Result<(), CliError> {
    match cmd {
        SitesCommand::Add {
            code,
            name,
            programme,
            org_code,
        } => {
            let site = write_tx(conn, |conn| {
                let site = sites::create(
                    conn,
                    sites::NewSite {
                        code,
                        name,
                        programme,
                        org_code,
                    },
                )?;
                audit_cli(conn, "site_created", "site", &site.id)?;
                Ok::<_, AppError>(site)
            })?;
            println!("created site {} ({})", site.code, site.id);
        }
        SitesCommand::List => {
            println!(
                "{:<14} {:<3} {:<6} {:<7} name",
                "code", "pgm", "org", "active"
            );
            for s in sites::list(conn, None)? {
                println!(
                    "{:<14} {:<3} {:<6} {:<7} {}",
                    s.code,
                    s.programme,
                    s.org_code.as_deref().unwrap_or("-"),
                    s.active,
                    s.name
                );
            }
        }
    }
    Ok(())
}

fn tokens_command(
    conn: &mut DbConnection,
    cmd: TokensCommand,
    default_days: i64,
) -> Result<(), CliError> {
    match cmd {
        TokensCommand::Create {
            username,
            label,
            days,
        } => {
            let user = user_by_name(conn, &username)?;
            let issued = write_tx(conn, |conn| {
                let issued = tokens::issue_device(
                    conn,
                    &user.id,
                    &label,
                    None,
                    days.unwrap_or(default_days),
                    default_days,
                )?;
                audit_cli(conn, "device_token_created", "token", &issued.info.id)?;
                Ok::<_, AppError>(issued)
            })?;
            println!(
                "device token {} for {username}, expires {}; shown once:\n{}",
                issued.info.id, issued.info.expires_at, issued.token
            );
        }
        TokensCommand::List => {
            let all_users = users::list(conn, None)?;
            println!(
                "{:<36} {:<20} {:<20} {:<20} revoked",
                "id", "user", "label", "expires"
            );
            for t in tokens::list_devices(conn, None)? {
                let owner = all_users
                    .iter()
                    .find(|u| u.id == t.user_id)
                    .map(|u| u.username.as_str())
                    .unwrap_or("?");
                println!(
                    "{:<36} {:<20} {:<20} {:<20} {}",
                    t.id,
                    owner,
                    t.label.as_deref().unwrap_or("-"),
                    t.expires_at.format("%Y-%m-%d %H:%M"),
                    t.revoked_at.is_some()
                );
            }
        }
        TokensCommand::Revoke { id } => {
            write_tx(conn, |conn| {
                tokens::revoke(conn, &id)?;
                audit_cli(conn, "token_revoked", "token", &id)
            })?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

fn forms_validate(dir: &Path, fixtures: Option<&Path>, only: Option<&str>) -> Result<(), CliError> {
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

fn forms_list_shipped(markdown: bool) {
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

fn forms_command(conn: &mut DbConnection, cmd: FormsCommand) -> Result<(), CliError> {
    match cmd {
        FormsCommand::Publish { file, definitions } => {
            let mut resources = match definitions {
                Some(dir) => {
                    definitions::from_dir(&dir)
                        .map_err(|e| CliError::App(format!("{}: {e}", dir.display())))?
                        .resources
                }
                None => Default::default(),
            };
            resources.fill_from(definitions::shipped_resources());
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::App(format!("{}: {e}", file.display())))?;
            let document: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| CliError::App(format!("{}: not valid JSON: {e}", file.display())))?;
            let compiled = check::check(&document, &resources)
                .map_err(|p| CliError::App(format!("{}:\n  {}", file.display(), p.join("\n  "))))?;
            let info = write_tx(conn, |conn| {
                let info = forms::registry::publish(conn, &compiled, None)?;
                audit_cli(
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
        }
        FormsCommand::List { .. } => {
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
        }
        FormsCommand::Validate { .. } | FormsCommand::Facts => {
            unreachable!("handled without a database")
        }
    }
    Ok(())
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
                    server: None,
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
            server,
            stats,
        } => {
            let report = collect::push(
                dir,
                &collect::PushOptions {
                    batch,
                    concurrency,
                    retries,
                    server,
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

fn forms_facts() {
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

fn keys_command(
    conn: &mut DbConnection,
    kek: &Kek,
    bits: u32,
    cmd: KeysCommand,
) -> Result<(), CliError> {
    match cmd {
        KeysCommand::Rotate { programme } => {
            if !sites::PROGRAMMES.contains(&programme.as_str()) {
                return Err(CliError::App(format!(
                    "unknown programme {programme:?}; expected kz or bt"
                )));
            }
            // The programme's first key is made by `serve`; a rotation must
            // not be the thing that silently creates it with a new KEK.
            keys::ensure_current(conn, kek, &[programme.as_str()], bits)
                .map_err(|e| CliError::App(e.to_string()))?;
            let info = keys::rotate(conn, kek, &programme, bits)?;
            audit_cli(conn, "key_rotated", "key", &info.kid)?;
            println!(
                "new current key for {programme}: {} (RSA-{})",
                info.kid, info.bits
            );
        }
        KeysCommand::List => {
            println!(
                "{:<28} {:<4} {:<5} {:<8} created",
                "kid", "pgm", "bits", "current"
            );
            for k in keys::list(conn)? {
                println!(
                    "{:<28} {:<4} {:<5} {:<8} {}",
                    k.kid,
                    k.programme,
                    k.bits,
                    k.current,
                    k.created_at.format("%Y-%m-%d %H:%M")
                );
            }
        }
    }
    Ok(())
}
