//! What the command groups share: the server's database (only ever one
//! that `serve` or `migrate` made), the operating-system user who acts on
//! the audit log, and the private files reports and exports are written to.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::CliError;
use crate::audit::{self, Event, Origin};
use crate::auth::{sites, Principal, Role};
use crate::config::{DatabaseTarget, Settings};
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::server;

/// The audit row's detail for changes made from the shell.
pub(super) const CLI_ORIGIN_DETAIL: &str = "cli";

/// Runs `f` on the server's database (see [`open_existing`]).
pub(super) fn with_db(
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
pub(super) fn open_existing(settings: &Settings) -> Result<DbConnection, CliError> {
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

/// One connection to the configured database, keyed (the embedded one is
/// encrypted) but neither migrated nor checked: for `migrate`, for the
/// export's second reading connection, and under [`open_to_verify`].
pub(super) fn open_keyed(settings: &Settings) -> Result<DbConnection, CliError> {
    let storage = server::open_storage(settings)?;
    Ok(db::open_one(&storage.database)?)
}

/// The audit chain's key (if there is one) and a keyed connection, for
/// `audit verify` and `restore`: they report what they find, a key file
/// that does not match included, rather than refuse to open the database.
pub(super) fn open_to_verify(
    settings: &Settings,
) -> Result<(Option<audit::ChainKey>, DbConnection), CliError> {
    let key = server::audit_key(settings)?;
    Ok((key, open_keyed(settings)?))
}

/// Who acts from the shell, for the audit log: the operating-system
/// account (`os:alice`), with the server's rights.
pub(super) fn shell_actor() -> &'static Principal {
    static ACTOR: std::sync::OnceLock<Principal> = std::sync::OnceLock::new();
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
        Principal {
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

/// Records `event` as done from the shell, by [`shell_actor`].
pub(super) fn audit(conn: &mut DbConnection, event: Event<'_>) -> Result<(), AppError> {
    audit::record(conn, &Origin::default(), event)
}

/// Records a change made from the shell to `kind` `id`.
pub(super) fn audit_change(
    conn: &mut DbConnection,
    action: &str,
    kind: &str,
    id: &str,
) -> Result<(), AppError> {
    audit(
        conn,
        Event::new(Some(shell_actor()), action)
            .object(kind, id)
            .detail(CLI_ORIGIN_DETAIL),
    )
}

/// Creates (or empties) `path` for output only its owner may read: exports
/// and reports may hold case data, and retention dates are birthdays.
pub(super) fn create_private(path: &Path) -> Result<std::fs::File, CliError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::App(format!("{}: {e}", path.display())))
}

/// Where a report or an export goes: a private file ([`create_private`])
/// or standard output; its errors name it.
pub(super) struct Output {
    writer: Box<dyn Write + Send>,
    name: String,
    /// An export's spinner, counting what is written (on a terminal).
    progress: Option<indicatif::ProgressBar>,
    bytes: u64,
    failed: Option<std::io::Error>,
}

impl Output {
    /// `out`, or standard output when there is none.
    pub(super) fn open(out: Option<&Path>) -> Result<Output, CliError> {
        let (writer, name): (Box<dyn Write + Send>, String) = match out {
            Some(path) => (
                Box::new(std::io::BufWriter::new(create_private(path)?)),
                path.display().to_string(),
            ),
            None => (
                Box::new(std::io::BufWriter::new(std::io::stdout())),
                "standard output".into(),
            ),
        };
        Ok(Output {
            writer,
            name,
            progress: None,
            bytes: 0,
            failed: None,
        })
    }

    /// An export's file, with a spinner counting the bytes written.
    pub(super) fn export(out: &Path) -> Result<Output, CliError> {
        let progress = indicatif::ProgressBar::new_spinner();
        progress.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .expect("a valid template"),
        );
        Ok(Output {
            progress: Some(progress),
            ..Output::open(Some(out))?
        })
    }

    /// Writes one chunk; false once writing failed (which stops the
    /// report; [`Output::finish`] says why).
    pub(super) fn chunk(&mut self, chunk: Vec<u8>) -> bool {
        if let Some(progress) = &self.progress {
            self.bytes += chunk.len() as u64;
            progress.set_message(format!("{} written", indicatif::HumanBytes(self.bytes)));
            progress.tick();
        }
        match self.writer.write_all(&chunk) {
            Ok(()) => true,
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    /// Flushes; a failure to write names the output.
    pub(super) fn finish(mut self) -> Result<(), CliError> {
        if let Some(progress) = &self.progress {
            progress.finish_and_clear();
        }
        match self.failed.take().or_else(|| self.writer.flush().err()) {
            Some(e) => Err(CliError::App(format!("{}: {e}", self.name))),
            None => Ok(()),
        }
    }

    /// Hands `write` a sink for the output's chunks, then [`Output::finish`]es.
    pub(super) fn write<T>(
        mut self,
        write: impl FnOnce(&mut (dyn FnMut(Vec<u8>) -> bool + Send)) -> Result<T, AppError>,
    ) -> Result<T, CliError> {
        let done = write(&mut |chunk| self.chunk(chunk))?;
        self.finish()?;
        Ok(done)
    }
}
