//! The `casesync` command line: serve, migrate, and the administration
//! commands an operator needs on the server itself. This file holds the
//! command tree and sends each command to the file of its group; what the
//! groups share (the server's database, the shell's actor on the audit
//! log, private output files) is in `shell.rs`.

mod audit;
mod backup;
mod cases;
mod collect;
mod export;
mod forms;
mod indicators;
mod keys;
mod odk_push;
mod retention;
mod seed;
mod shell;
mod staff;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::db;
use crate::error::AppError;
use crate::server;

pub use self::audit::AuditCommand;
pub use self::cases::CasesCommand;
pub use self::collect::{CollectArgs, CollectCommand};
pub use self::export::{ExportCommand, ExportOptions};
pub use self::forms::FormsCommand;
pub use self::indicators::IndicatorsArgs;
pub use self::keys::KeysCommand;
pub use self::retention::RetentionCommand;
pub use self::seed::SeedArgs;
pub use self::staff::{AddUser, SitesCommand, TokensCommand, UsersCommand};

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
    /// Benchmarks only: fill the data directory with realistic cases
    /// through ingest's own code (`scripts/bench-ingest.sh STORED=`,
    /// `scripts/bench-console.sh`). Never on a real centre's data.
    #[command(hide = true)]
    Seed(SeedArgs),
}

/// Why a command failed, printed after `casesync: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Start(#[from] server::StartError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
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

pub fn run(cli: Cli) -> Result<(), CliError> {
    // Everything this process creates (data directory, database, keys,
    // exports) is its owner's alone, before anything is created.
    // SAFETY: umask only sets the process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    match cli.command {
        // The collector is a client: it needs no server configuration.
        Command::Collect(args) => collect::run(args),
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
        Command::Collect(args) => collect::run(args),
        Command::Serve => Ok(server::serve(settings)?),
        Command::Migrate => {
            // Keyed: the embedded database is encrypted.
            let mut conn = shell::open_keyed(&settings)?;
            let applied = db::run_migrations(&mut conn)?;
            println!("{applied} migration(s) applied; the database is current");
            Ok(())
        }
        Command::Users(cmd) => staff::users(&settings, cmd),
        Command::Sites(cmd) => staff::sites(&settings, cmd),
        Command::Tokens(cmd) => staff::tokens(&settings, cmd),
        Command::Forms(cmd) => forms::run(&settings, cmd),
        Command::Keys(cmd) => keys::run(&settings, cmd),
        Command::Cases(cmd) => cases::run(&settings, cmd),
        Command::Export(cmd) => export::run(&settings, cmd),
        Command::Indicators(args) => indicators::run(&settings, args),
        Command::Audit(cmd) => audit::run(&settings, cmd),
        Command::Retention(cmd) => retention::run(&settings, cmd),
        Command::Backup { out } => backup::backup(&settings, &out),
        Command::Restore {
            file,
            data_dir,
            master_key,
        } => backup::restore(&settings, &file, &data_dir, master_key.as_deref()),
        Command::Rekey {
            new_passphrase_file,
        } => keys::rekey(&settings, new_passphrase_file.as_deref()),
        Command::Seed(args) => seed::run(settings, args),
    }
}
