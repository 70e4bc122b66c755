//! Storage: one diesel connection type over SQLite (embedded default) and
//! PostgreSQL (scale), an r2d2 pool, and the embedded migrations of both.
//!
//! The embedded database is SQLCipher: every page encrypted (AES-256) and
//! authenticated under a key derived from the key-encryption key, given as
//! the first statement on every connection. A plaintext database from
//! before is encrypted in place on its first keyed open.

pub mod encryption;
mod page_crypto;
pub mod schema;

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::DatabaseTarget;
pub use encryption::DatabaseKey;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Key of the PostgreSQL advisory lock held while migrating, so servers
/// starting together do not race each other ("casesync" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6361_7365_7379_6e63;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

pub type Pool = r2d2::Pool<ConnectionManager>;
pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// Where the database is and, for the embedded one, the key it is
/// encrypted with. A bare target opens without a key: a plaintext SQLite
/// file (tests and tools that make their own), or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Database {
    pub target: DatabaseTarget,
    pub key: Option<DatabaseKey>,
}

impl Database {
    pub fn new(target: DatabaseTarget, key: Option<DatabaseKey>) -> Database {
        // PostgreSQL's storage is encrypted by its own means (docs/operations.md).
        let key = key.filter(|_| matches!(target, DatabaseTarget::Sqlite(_)));
        Database { target, key }
    }
}

impl From<&DatabaseTarget> for Database {
    fn from(target: &DatabaseTarget) -> Database {
        Database::new(target.clone(), None)
    }
}

impl From<&Database> for Database {
    fn from(database: &Database) -> Database {
        database.clone()
    }
}

/// Opens connections of the configured dialect. diesel's derived
/// `establish` would try each dialect in turn (and SQLite accepts any string
/// as a file name), so the dialect is chosen from the settings instead.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    database: Database,
    busy_timeout_ms: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("connecting to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::PoolError),
    #[error("migrations: {0}")]
    Migration(String),
    #[error("creating the database directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Encryption(String),
}

impl ConnectionManager {
    pub fn new(database: impl Into<Database>) -> Self {
        ConnectionManager {
            database: database.into(),
            busy_timeout_ms: 10_000,
        }
    }

    fn open(&self) -> Result<DbConnection, DbError> {
        match &self.database.target {
            DatabaseTarget::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                if let Some(key) = &self.database.key {
                    // The key before anything else reads a page.
                    encryption::apply_key(&mut conn, key, self.busy_timeout_ms)?;
                }
                // WAL + synchronous=FULL: an acknowledged write survives a power cut.
                // The busy timeout first: switching a new file to WAL takes a
                // lock that other connections opening at once must wait for.
                // 16 KiB pages, set before WAL fixes a new file's page size
                // (an existing file keeps its own): a submission's JWE and
                // envelope fit one page instead of overflowing into three,
                // and exports and indicator scans read a quarter of the
                // pages (a form export of 300,000 rows: 194k → 276k rows/s).
                // A 32 MiB page cache (SQLite's default is 2 MB): SQLCipher
                // decrypts and verifies every page it brings into the cache,
                // so with the default the index pages every insert touches
                // were decrypted again and again (storing 200,000 referrals:
                // 108 s → 28 s; docs/operations.md, "Data at rest").
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {};
                     PRAGMA page_size = 16384;
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = FULL;
                     PRAGMA cache_size = -32768;
                     PRAGMA foreign_keys = ON;",
                    self.busy_timeout_ms
                ))?;
                Ok(DbConnection::Sqlite(conn))
            }
            DatabaseTarget::Postgres(url) => {
                let mut conn = PgConnection::establish(url.expose())?;
                // DateStyle ISO: times cast to text read as SQLite stores
                // them (the form export relies on it).
                conn.batch_execute("SET TIME ZONE 'UTC'; SET DateStyle TO ISO")?;
                Ok(DbConnection::Pg(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        self.open().map_err(|e| match e {
            DbError::Connect(c) => r2d2::Error::ConnectionError(c),
            DbError::Query(q) => r2d2::Error::QueryError(q),
            other => r2d2::Error::ConnectionError(diesel::ConnectionError::BadConnection(
                other.to_string(),
            )),
        })
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        r2d2::R2D2Connection::is_broken(conn)
    }
}

/// SQLite files this process has prepared with a key. The file is looked
/// at (and, if plaintext, encrypted) only once, before this process opens
/// a connection to it: opening it outside SQLite while SQLite has it open
/// would release SQLite's locks on it, which are per process.
static PREPARED: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Default::default);

/// Makes the SQLite file's directory (0700) and the file itself (0600, so
/// its -wal and -shm are made alike), and encrypts a plaintext file when a
/// key is given. Nothing to do for PostgreSQL.
fn prepare_file(database: &Database) -> Result<(), DbError> {
    let DatabaseTarget::Sqlite(path) = &database.target else {
        return Ok(());
    };
    let mut prepared = PREPARED.lock().expect("prepared files lock");
    if database.key.is_some() && prepared.contains(path) {
        return Ok(());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if !path.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
    }
    if let Some(key) = &database.key {
        encryption::encrypt_if_plaintext(path, key)?;
        encryption::convert_if_legacy(path, key)?;
        prepared.insert(path.clone());
    }
    Ok(())
}

/// A connection of its own, outside the pool, for a thread that writes
/// all the time (the group committer): SQLite keeps a connection's page
/// cache only while no other connection has written, so the one writer's
/// cache stays warm from commit to commit, and the index pages every
/// insert touches are not read and decrypted again for each group.
pub fn dedicated(database: &Database) -> Result<DbConnection, DbError> {
    prepare_file(database)?;
    ConnectionManager::new(database.clone()).open()
}

/// Builds the pool; prepares the SQLite file first (see `prepare_file`).
pub fn connect(database: impl Into<Database>, pool_size: u32) -> Result<Pool, DbError> {
    let database = database.into();
    prepare_file(&database)?;
    // One connection first: a wrong key or an unreachable server is
    // reported at once, not after the pool's connection timeout.
    drop(ConnectionManager::new(database.clone()).open()?);
    let target = &database.target;
    let pool = r2d2::Pool::builder()
        .max_size(pool_size)
        .min_idle(Some(1))
        // A network connection can die between uses: check it before
        // handing it out. An embedded SQLite connection cannot.
        .test_on_check_out(matches!(target, DatabaseTarget::Postgres(_)))
        .connection_timeout(Duration::from_secs(10))
        .build(ConnectionManager::new(database.clone()))?;
    Ok(pool)
}

/// Applies every pending migration of the connection's dialect.
pub fn run_migrations(conn: &mut DbConnection) -> Result<usize, DbError> {
    let applied = match conn {
        DbConnection::Sqlite(c) => c
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(|e| DbError::Migration(e.to_string()))?
            .len(),
        DbConnection::Pg(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
            let result = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len())
                .map_err(|e| DbError::Migration(e.to_string()));
            c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
            result?
        }
    };
    Ok(applied)
}

/// Runs `f` holding the migration lock on PostgreSQL (a session advisory
/// lock, re-entrant, so `run_migrations` may take it again inside): the
/// first start of a database (migrations, the audit chain's keying, the
/// programme keys, the first admin) then happens once, whichever of several
/// servers started together gets there first. SQLite has one server.
pub fn with_start_lock<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbError>,
{
    if !matches!(conn, DbConnection::Pg(_)) {
        return f(conn);
    }
    let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})");
    conn.batch_execute(&lock).map_err(DbError::from)?;
    let result = f(conn);
    let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})");
    conn.batch_execute(&unlock).map_err(DbError::from)?;
    result
}

/// True when the database has every migration this build knows.
pub fn migrations_current(conn: &mut DbConnection) -> Result<bool, DbError> {
    let pending = match conn {
        DbConnection::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
        DbConnection::Pg(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(!pending)
}

/// Runs `f` in a write transaction. On SQLite it is `BEGIN IMMEDIATE`, so two
/// writers queue on the busy timeout instead of failing when a read lock
/// would have to be upgraded.
pub fn write_tx<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    match conn {
        DbConnection::Sqlite(c) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
        }
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    match f(conn) {
        Ok(value) => {
            DbConnection::commit_transaction(conn)?;
            Ok(value)
        }
        Err(err) => {
            // The caller's error is the one worth reporting.
            let _ = DbConnection::rollback_transaction(conn);
            Err(err)
        }
    }
}

/// Inserts `rows` in as few statements as the backend allows: on
/// PostgreSQL `batch` writes up to 1,000 rows a statement, since each
/// statement is a round trip inside the committer's serial section (#19
/// item 8: 61.6 → 51.6 statements per referral; on loopback the backends'
/// CPU did not change measurably, a remote database saves the latency). On
/// SQLite, where a statement is a call inside the process and diesel's
/// MultiConnection has no batch insert, `one` writes each row.
pub fn insert_rows<T>(
    conn: &mut DbConnection,
    rows: Vec<T>,
    batch: impl Fn(&mut PgConnection, Vec<T>) -> diesel::QueryResult<usize>,
    one: impl Fn(&mut DbConnection, T) -> diesel::QueryResult<usize>,
) -> diesel::QueryResult<usize> {
    const AT_MOST: usize = 1000;
    let mut written = 0;
    match conn {
        DbConnection::Pg(c) => {
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                written += batch(c, rows.by_ref().take(AT_MOST).collect())?;
            }
        }
        conn => {
            for row in rows {
                written += one(conn, row)?;
            }
        }
    }
    Ok(written)
}

/// Whether the database answers a trivial query.
pub fn ping(conn: &mut DbConnection) -> bool {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
        .get_result::<i32>(conn)
        .is_ok()
}

/// Opens a connection to the database as it is: no directory or file is
/// made and nothing is encrypted (looking at a database before deciding).
pub fn open_as_is(database: &Database) -> Result<DbConnection, DbError> {
    ConnectionManager::new(database.clone()).open()
}

/// Opens a single connection outside the pool (CLI commands, tests).
pub fn open_one(database: impl Into<Database>) -> Result<DbConnection, DbError> {
    let database = database.into();
    prepare_file(&database)?;
    ConnectionManager::new(database).open()
}
