//! Starting the server: data directory, database, migrations, first-start
//! bootstrap, then HTTP (or HTTPS) with a graceful drain on SIGTERM.
//!
//! The data directory holds children's data (the embedded database) and
//! the keys: it is made 0700 with every file 0600, and a server refuses to
//! start on one that others can read. `rekey` (below) replaces the keys
//! under it; an interrupted one is finished or undone here, on opening.

pub mod rekey;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::HttpServer;

use crate::app::AppState;
use crate::audit::{self, Event, Origin};
use crate::auth::passwords::NewPassword;
use crate::auth::{sites, users, Role};
use crate::config::{Settings, TlsSettings};
use crate::cpu::CpuPool;
use crate::crypto::kek::{self, Kek};
use crate::crypto::keys::{self, KeyRing};
use crate::db::{self, write_tx, Database, DatabaseKey, DbConnection};
use crate::error::{AppError, AppResult};
use crate::forms::{self, FormCache};
use crate::ingest::committer::Committer;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("first-start setup: {0}")]
    Bootstrap(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The data directory or a file in it is open to others, or a key is
    /// missing: the message names the path and the fix.
    #[error("{0}")]
    DataDir(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

/// Refuses a data directory, or anything in it, that the group or others
/// may use: it holds the database and the keys. The error names the path
/// and the command that fixes it.
pub fn check_private(dir: &Path) -> Result<(), StartError> {
    let mode = |path: &Path| {
        fs::metadata(path)
            .map(|m| (m.permissions().mode() & 0o777, m.is_dir()))
            .map_err(io(format!("reading {}", path.display())))
    };
    let (bits, _) = mode(dir)?;
    if bits & 0o077 != 0 {
        return Err(StartError::DataDir(format!(
            "the data directory {} is open to other users (mode {bits:o}); it holds children's data and keys. Fix: chmod 700 {}",
            dir.display(),
            dir.display()
        )));
    }
    let entries = fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(io(format!("reading {}", dir.display())))?
            .path();
        let (bits, is_dir) = match mode(&path) {
            // Gone since it was listed: SQLite removes a database's -wal
            // and -shm when its last connection closes, which another
            // process may do at any moment.
            Err(StartError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            other => other?,
        };
        if is_dir {
            check_private(&path)?;
        } else if bits & 0o077 != 0 {
            return Err(StartError::DataDir(format!(
                "{} is open to other users (mode {bits:o}); the data directory holds children's data and keys. Fix: chmod 600 {}",
                path.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// A refusal from the audit chain's keying, with its words (an internal
/// error's cause is meant for the operator here).
fn refusal(err: AppError) -> StartError {
    match err {
        AppError::Internal(cause) => StartError::DataDir(cause),
        other => StartError::DataDir(other.to_string()),
    }
}

/// A missing master.key is made anew on first start; beside an existing
/// embedded database it was lost instead, and a new one would not open it.
fn refuse_lost_master_key(settings: &Settings) -> Result<(), StartError> {
    let material = kek::key_material_file(settings)?;
    if material.exists() {
        return Ok(());
    }
    let file_name = material.file_name().unwrap_or_default().to_string_lossy();
    match &settings.database_target()? {
        crate::config::DatabaseTarget::Sqlite(path) => {
            // A plaintext database from before encryption has no key to lose.
            let encrypted = fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false)
                && !db::encryption::is_plaintext(path)
                    .map_err(io(format!("reading {}", path.display())))?;
            if encrypted {
                return Err(StartError::DataDir(format!(
                    "{} is missing but the database {} exists: the database does not open without the key it was encrypted with. Put back the {file_name} you keep for it (docs/operations.md, backup and restore)",
                    material.display(),
                    path.display(),
                )));
            }
        }
        target @ crate::config::DatabaseTarget::Postgres(_) => {
            // A new key would open none of the programme keys sealed in the
            // database (a shell run outside the server's directory, or a
            // second server without its copy): refuse before making one.
            // A database that cannot be asked yet (no tables) has none.
            let sealed = db::open_one(Database::new(target.clone(), None))
                .ok()
                .and_then(|mut conn| crate::crypto::keys::any_stored(&mut conn).ok())
                .unwrap_or(false);
            if sealed {
                return Err(StartError::DataDir(format!(
                    "{} is missing but the PostgreSQL database holds programme keys sealed under a key-encryption key, and a new one does not open them. Run this with the server's data directory (--data-dir, or --config with its casesync.toml), or put back the {file_name} you keep for it (docs/operations.md, backup and restore). {}",
                    material.display(),
                    kek::SHARED_KEYS_FIX,
                )));
            }
        }
    }
    Ok(())
}

/// What every command that opens the database needs first: the data
/// directory (made 0700, refused when open to others), the key-encryption
/// key, and the database with the key derived from it.
pub struct Storage {
    pub kek: Kek,
    pub database: Database,
}

pub fn open_storage(settings: &Settings) -> Result<Storage, StartError> {
    kek::create_private_dir(&settings.data_dir)?;
    check_private(&settings.data_dir)?;
    rekey::finish_interrupted(settings)?;
    refuse_lost_master_key(settings)?;
    let kek = Kek::load(settings)?;
    let database = Database::new(
        settings.database_target()?,
        Some(DatabaseKey::derived_from(&kek)),
    );
    Ok(Storage { kek, database })
}

/// A single connection to the configured database, keyed, migrated and
/// with the audit chain's key opened (CLI commands, tests).
pub fn open_database(settings: &Settings) -> Result<DbConnection, StartError> {
    let storage = open_storage(settings)?;
    let mut conn = db::open_one(&storage.database)?;
    prepare_database(&mut conn)?;
    audit::key_chain(&mut conn, &settings.data_dir, &storage.kek).map_err(refusal)?;
    Ok(conn)
}

/// The audit chain's key from `data/audit.key`, if there is one (for
/// `audit verify`, which reports rather than refuses a mismatch).
pub fn audit_key(settings: &Settings) -> Result<Option<audit::ChainKey>, StartError> {
    let storage = open_storage(settings)?;
    let file = crate::crypto::audit_key::AuditKeyFile::load(&settings.data_dir, &storage.kek)?;
    Ok(file.as_ref().map(audit::ChainKey::new))
}

/// The key material every server of a new PostgreSQL database shares,
/// made once into `out` (a new directory, 0700) before any of them starts:
/// the KEK's (`master.key`, or with a passphrase configured `kek.salt`) and
/// `audit.key`, sealed under that KEK, keying the chain from its first row.
/// Copied into each server's data directory, servers started together
/// come up on the same keys (docs/operations.md, "Several servers").
pub fn make_shared_keys(settings: &Settings, out: &Path) -> Result<Vec<PathBuf>, StartError> {
    if out.exists() {
        return Err(StartError::DataDir(format!(
            "{} already exists: name a new directory, so no key file is ever overwritten",
            out.display()
        )));
    }
    kek::create_private_dir(out)?;
    let (kek, material) = Kek::generate_like(settings)?;
    let material_file = out.join(
        kek::key_material_file(settings)?
            .file_name()
            .unwrap_or_default(),
    );
    kek::write_key_file(&material_file, &material)?;
    // A new database's chain head is at seq 0: the key keys it from seq 1.
    crate::crypto::audit_key::AuditKeyFile::generate(uuid::Uuid::new_v4().to_string(), 1)
        .write_new(out, &kek)?;
    Ok(vec![
        material_file,
        out.join(crate::crypto::audit_key::AUDIT_KEY_FILE),
    ])
}

/// Held by a running `serve` (shared, so several may share a directory);
/// `rekey` and `restore` need it exclusively.
pub struct DataDirLock {
    _file: fs::File,
}

pub const LOCK_FILE: &str = "casesync.lock";

pub fn lock_data_dir(dir: &Path, exclusive: bool) -> Result<DataDirLock, StartError> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    let how = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: a valid open descriptor; the lock ends when the file closes.
    if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
        let holder = if exclusive {
            "a casesync server (or backup) is running"
        } else {
            "a rekey is running"
        };
        return Err(StartError::DataDir(format!(
            "{holder} on {} (it holds {}): wait for it, or stop it, first",
            dir.display(),
            path.display()
        )));
    }
    Ok(DataDirLock { _file: file })
}

/// Everything `serve` does before it listens: data directory, keys, pool,
/// migrations and, on an empty database, the first admin and default sites.
pub fn prepare(settings: Settings) -> Result<AppState, StartError> {
    settings.validate()?;
    let Storage { kek, database } = open_storage(&settings)?;
    let pool = db::connect(&database, settings.db_pool_size)?;
    let mut conn = pool.get().map_err(db::DbError::from)?;
    // Servers started together on a new PostgreSQL database take turns
    // here: the first keys the audit chain and makes the programme keys,
    // the others find them made and check their KEK opens them.
    db::with_start_lock(&mut conn, |conn| first_start(conn, &settings, &kek))?;
    drop(conn);
    Ok(AppState {
        pool: pool.clone(),
        cpu: Arc::new(CpuPool::from_settings(&settings)),
        settings: Arc::new(settings),
        metrics: Metrics::new(),
        forms: Arc::new(FormCache::new()),
        odk_forms: Default::default(),
        keys: Arc::new(KeyRing::new(kek)),
        committer: Arc::new(Committer::start(pool, database)),
        chain_check: Default::default(),
        recent_reports: Default::default(),
    })
}

/// Migrations, the audit chain's key, the first admin, the shipped forms
/// and the programme keys, each made once on a new database.
fn first_start(conn: &mut DbConnection, settings: &Settings, kek: &Kek) -> Result<(), StartError> {
    prepare_database(conn)?;
    audit::key_chain(conn, &settings.data_dir, kek).map_err(refusal)?;
    bootstrap(conn, settings)?;
    publish_shipped_forms(conn)?;
    let created = keys::ensure_current(conn, kek, &sites::PROGRAMMES, settings.rsa_key_bits)?;
    if !created.is_empty() {
        tracing::info!(keys = ?created, "programme keys created");
    }
    // Every published version's XForm for the current keys (#17): made
    // once, here for the shipped versions and after a key rotation.
    let refused = crate::odk::store::ensure_all(conn)
        .map_err(|e| StartError::Bootstrap(format!("making the XForms: {e}")))?;
    for form in &refused {
        tracing::error!(form = %form, "form version has no XForm");
    }
    Ok(())
}

/// Applies pending migrations and seeds the manuals' sites into an empty
/// site table. Shared by `serve` and the CLI.
pub fn prepare_database(conn: &mut DbConnection) -> Result<(), StartError> {
    let applied = db::run_migrations(conn)?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    // Rows written before the audit chain existed join it, before any new one.
    let sealed = audit::seal_unsealed(conn).map_err(|e| StartError::Bootstrap(e.to_string()))?;
    if sealed > 0 {
        tracing::info!(sealed, "audit rows from before the chain sealed into it");
    }
    // Submissions stored before their repeat groups were kept beside them
    // (migration 000032) get them, once, so the .zip export reads no
    // envelope.
    let repeats = crate::submissions::repeats::backfill(conn)
        .map_err(|e| StartError::Bootstrap(format!("storing repeat groups: {e}")))?;
    if repeats > 0 {
        tracing::info!(repeats, "repeat groups of earlier submissions stored");
    }
    let seed = |conn: &mut DbConnection| {
        write_tx(conn, |conn| {
            if sites::count(conn)? == 0 {
                sites::seed_defaults(conn)
            } else {
                Ok(0)
            }
        })
    };
    let seeded = match seed(conn) {
        Err(AppError::Conflict(_)) => seed(conn),
        other => other,
    }
    .map_err(|e| StartError::Bootstrap(e.to_string()))?;
    if seeded > 0 {
        tracing::info!(seeded, "default sites created");
    }
    // After the migration that made it, or a release whose indicators read
    // more: what the indicator reports read of each case.
    let projected = crate::cases::projection::ensure(conn)
        .map_err(|e| StartError::Bootstrap(format!("projecting cases for indicators: {e}")))?;
    if projected > 0 {
        tracing::info!(projected, "cases projected for the indicator reports");
    }
    // After the migration that made it: each case's deadline tally, which
    // the case export reads instead of the case's deadlines.
    let tallied = crate::cases::timeline::fill_deadline_tallies(conn)
        .map_err(|e| StartError::Bootstrap(format!("tallying cases' deadlines: {e}")))?;
    if tallied > 0 {
        tracing::info!(tallied, "deadline tallies kept for earlier cases");
    }
    Ok(())
}

/// Publishes the form versions built into this binary that the database
/// does not have yet. A shipped file whose content differs from the version
/// the database froze under the same version string is not published: the
/// frozen one stays, and the log says so.
fn publish_shipped_forms(conn: &mut DbConnection) -> Result<(), StartError> {
    let shipped = forms::definitions::shipped();
    for problem in &shipped.problems {
        tracing::error!(%problem, "shipped form definition unreadable");
    }
    let outcome = forms::registry::publish_shipped(conn, &shipped)
        .map_err(|e| StartError::Bootstrap(format!("publishing the shipped forms: {e}")))?;
    for form in &outcome.invalid {
        tracing::error!(form = %form, "shipped form definition is invalid; not published");
    }
    for form in &outcome.differing {
        tracing::warn!(form = %form, "shipped form differs from the published version of the same number; keeping the published one");
    }
    if !outcome.published.is_empty() {
        tracing::info!(
            count = outcome.published.len(),
            "shipped form versions published"
        );
    }
    Ok(())
}

/// On a database without an admin: creates `admin` with a
/// one-time password written to `<data_dir>/initial-admin-password` (0600).
fn bootstrap(conn: &mut DbConnection, settings: &Settings) -> Result<(), StartError> {
    // Two servers starting together on one PostgreSQL: the loser of the
    // unique-key race finds the work done on its second look.
    let first = match create_first_admin(conn) {
        Err(AppError::Conflict(_)) => create_first_admin(conn),
        other => other,
    }
    .map_err(|e| StartError::Bootstrap(e.to_string()))?;
    let Some(password) = first else {
        return Ok(());
    };
    let path = settings.initial_admin_password_path();
    write_private_file(&path, &format!("{password}\n"))
        .map_err(io(format!("writing {}", path.display())))?;
    tracing::warn!(
        file = %path.display(),
        username = "admin",
        "first start: created the admin account; its one-time password is in the file, and must be changed at first login"
    );
    Ok(())
}

fn create_first_admin(conn: &mut DbConnection) -> AppResult<Option<String>> {
    // Every start but the first finds an admin: no Argon2 run for them.
    if users::count_with_role(conn, Role::Admin)? > 0 {
        return Ok(None);
    }
    // Hashed before the transaction (#19), which checks again.
    let password = NewPassword::hashed(None);
    write_tx(conn, |conn| {
        // Users made by the CLI before the first `serve` do not count: without
        // an admin nobody could administer the server.
        if users::count_with_role(conn, Role::Admin)? > 0 {
            return Ok(None);
        }
        let created = users::create(
            conn,
            users::NewUser {
                username: "admin".into(),
                display_name: Some("Administrator".into()),
                initials: None,
                role: Role::Admin,
                site_ids: Vec::new(),
                password: None,
            },
            password,
        )?;
        audit::record(
            conn,
            &Origin::default(),
            Event::new(None, "user_created")
                .object("user", &created.user.id)
                .detail("first start"),
        )?;
        Ok(created.one_time_password)
    })
}

/// Writes a file only its owner can read, replacing any earlier one.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to new files; an old file keeps its bits otherwise.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn tls_config(tls: &TlsSettings) -> Result<rustls::ServerConfig, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Tls(format!("reading {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{} holds no certificate",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| StartError::Tls(format!("reading {}: {e}", tls.key.display())))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StartError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| StartError::Tls(e.to_string()))
}

/// A bound, not yet running server and the address it listens on.
pub struct Bound {
    pub server: actix_web::dev::Server,
    pub addr: SocketAddr,
}

/// Binds the listener (HTTPS when TLS is configured). Must be called inside
/// an actix system.
pub fn bind(state: AppState) -> Result<Bound, StartError> {
    let settings = state.settings.clone();
    let listener =
        TcpListener::bind(&settings.bind).map_err(io(format!("listening on {}", settings.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    let mut server = HttpServer::new(move || crate::http::build(state.clone()))
        .shutdown_timeout(settings.shutdown_timeout_secs);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    let server = match &settings.tls {
        Some(tls) => server
            .listen_rustls_0_23(listener, tls_config(tls)?)
            .map_err(io("starting HTTPS"))?,
        None => server.listen(listener).map_err(io("starting HTTP"))?,
    };
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, "casesync listening");
    Ok(Bound {
        server: server.run(),
        addr,
    })
}

/// `casesync serve`: runs until SIGTERM or SIGINT, then lets in-flight
/// requests finish (up to `shutdown_timeout_secs`).
pub fn serve(settings: Settings) -> Result<(), StartError> {
    kek::create_private_dir(&settings.data_dir)?;
    let _running = lock_data_dir(&settings.data_dir, false)?;
    let state = prepare(settings)?;
    actix_web::rt::System::new().block_on(async move {
        let bound = bind(state)?;
        bound.server.await.map_err(io("serving"))?;
        tracing::info!("casesync stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A file listed and then gone before its mode is read (SQLite's -shm
    /// when another process closes the database) is no refusal; a dangling
    /// link stands in for it here. A file open to others still is.
    #[test]
    fn a_file_gone_since_it_was_listed_is_skipped_and_an_open_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let db = dir.path().join("casesync.db");
        fs::write(&db, b"").unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("casesync.db-shm"))
            .unwrap();
        check_private(dir.path()).expect("a file gone since it was listed is no refusal");

        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
        let refused = check_private(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
    }
}
