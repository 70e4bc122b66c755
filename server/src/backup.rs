//! `casesync backup` and `casesync restore`.
//!
//! A backup is one ZIP file (stored, not compressed: the database is
//! encrypted) holding `manifest.json`, an online copy of the embedded
//! database (`casesync.db`, SQLite's backup API, still encrypted under the
//! same key), and the sealed key material that goes with it: `audit.key`
//! and, for a passphrase KEK, `kek.salt`. Never the key-encryption key
//! itself (`master.key` or the passphrase): it is kept apart from the
//! backups, so a stolen backup is unreadable. On PostgreSQL the database
//! is backed up with PostgreSQL's own tools (docs/operations.md) and the
//! file holds the key material only.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::audit;
use crate::config::{DatabaseTarget, Settings};
use crate::crypto::audit_key::AUDIT_KEY_FILE;
use crate::crypto::kek::{self, MASTER_KEY_FILE, SALT_FILE};
use crate::db::{self, encryption, Database};
use crate::server::{self, StartError};

pub const MANIFEST: &str = "manifest.json";
pub const DATABASE_FILE: &str = "casesync.db";
const FORMAT: &str = "casesync-backup-1";

/// The files a backup may hold besides its manifest; nothing else is
/// ever extracted.
const PAYLOAD: [&str; 3] = [DATABASE_FILE, AUDIT_KEY_FILE, SALT_FILE];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub created_at: String,
    pub casesync_version: String,
    /// `sqlite` (the database is in the file) or `postgresql` (it is not).
    pub database: String,
    /// Whether `casesync.db` is encrypted (SQLCipher).
    pub encrypted: bool,
    /// What opens it, kept apart: `master.key` or `passphrase`.
    pub kek: String,
    /// The copy's audit head (`SEQ:HASH`): an anchor for the restored chain.
    pub audit_head: Option<String>,
    pub files: Vec<ManifestFile>,
}

fn sha256_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut file = fs::File::open(path).map_err(io_err(format!("reading {}", path.display())))?;
    let mut context = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex::encode(context.finish())))
}

fn private_file(path: &Path) -> Result<fs::File, BackupError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("creating {}", path.display())))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes a staging directory however the backup ends.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a backup of the configured server to `out` (a new file). Works
/// while the server runs and writes.
pub fn backup(settings: &Settings, out: &Path) -> Result<Manifest, BackupError> {
    if out.exists() {
        return Err(BackupError::Refused(format!(
            "{} exists; a backup never replaces a file: name a new one",
            out.display()
        )));
    }
    let storage = server::open_storage(settings)?;
    // Shared, like a running server's: a rekey cannot start meanwhile.
    let _lock = server::lock_data_dir(&settings.data_dir, false)?;
    let staging = Staging(sibling(out, ".staging"));
    let _ = fs::remove_dir_all(&staging.0);
    kek::create_private_dir(&staging.0)?;

    let mut payload: Vec<PathBuf> = Vec::new();
    let (database, encrypted, audit_head) = match &storage.database.target {
        DatabaseTarget::Sqlite(path) => {
            let copy = staging.0.join(DATABASE_FILE);
            // A database an older version left in plaintext is copied as it is.
            let encrypted = !encryption::is_plaintext(path)
                .map_err(io_err(format!("reading {}", path.display())))?;
            let key = storage.database.key.as_ref().filter(|_| encrypted);
            encryption::online_backup(path, &copy, key)?;
            let mut conn = db::open_one(Database::new(
                DatabaseTarget::Sqlite(copy.clone()),
                key.cloned(),
            ))?;
            let head = audit::head(&mut conn).map_err(|e| BackupError::Refused(e.to_string()))?;
            payload.push(copy);
            ("sqlite", encrypted, head)
        }
        DatabaseTarget::Postgres(_) => ("postgresql", false, None),
    };
    for name in [AUDIT_KEY_FILE, SALT_FILE] {
        let path = settings.data_dir.join(name);
        if path.exists() {
            let copy = staging.0.join(name);
            fs::copy(&path, &copy).map_err(io_err(format!("copying {}", path.display())))?;
            payload.push(copy);
        }
    }
    let mut files = Vec::new();
    for path in &payload {
        let (bytes, sha256) = sha256_file(path)?;
        files.push(ManifestFile {
            name: path
                .file_name()
                .expect("a staged file")
                .to_string_lossy()
                .into_owned(),
            bytes,
            sha256,
        });
    }
    let kek_kind = if kek::key_material_file(settings)?.ends_with(MASTER_KEY_FILE) {
        MASTER_KEY_FILE
    } else {
        "passphrase"
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        casesync_version: env!("CARGO_PKG_VERSION").into(),
        database: database.into(),
        encrypted,
        kek: kek_kind.into(),
        audit_head: audit_head.map(|a| a.to_string()),
        files,
    };

    let partial = sibling(out, ".partial");
    let _ = fs::remove_file(&partial);
    let file = private_file(&partial)?;
    let written = (|| -> zip::result::ZipResult<fs::File> {
        let mut zip = ZipWriter::new(file);
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(true)
            .unix_permissions(0o600);
        zip.start_file(MANIFEST, options)?;
        zip.write_all(
            serde_json::to_string_pretty(&manifest)
                .expect("plain data serialises")
                .as_bytes(),
        )?;
        for path in &payload {
            zip.start_file(
                path.file_name().expect("a staged file").to_string_lossy(),
                options,
            )?;
            io::copy(&mut fs::File::open(path)?, &mut zip)?;
        }
        zip.finish()
    })();
    let file = written.map_err(|e| {
        let _ = fs::remove_file(&partial);
        BackupError::Refused(format!("writing {}: {e}", partial.display()))
    })?;
    file.sync_all()
        .map_err(io_err(format!("writing {}", partial.display())))?;
    fs::rename(&partial, out).map_err(io_err(format!("naming {}", out.display())))?;
    Ok(manifest)
}

/// Whether a directory is missing or empty.
fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(BackupError::Io {
            context: format!("reading {}", dir.display()),
            source: e,
        }),
    }
}

/// Unpacks a backup into `data_dir`, which must be missing or empty (a
/// restore never overwrites a data directory, live or not), checking every
/// file against the manifest. `master_key`, when given, is copied in
/// beside it. The directory is left 0700 with its files 0600.
pub fn restore(
    archive: &Path,
    data_dir: &Path,
    master_key: Option<&Path>,
) -> Result<Manifest, BackupError> {
    if !is_empty_dir(data_dir)? {
        return Err(BackupError::Refused(format!(
            "{} is not empty: a restore never overwrites a data directory. Restore into a new directory, then point data_dir at it",
            data_dir.display()
        )));
    }
    let file = fs::File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    let not_a_backup = |why: String| {
        BackupError::Refused(format!(
            "{} is not a casesync backup: {why}",
            archive.display()
        ))
    };
    let mut zip = ZipArchive::new(file).map_err(|e| not_a_backup(e.to_string()))?;
    let manifest: Manifest = {
        let entry = zip
            .by_name(MANIFEST)
            .map_err(|_| not_a_backup(format!("it has no {MANIFEST}")))?;
        serde_json::from_reader(entry).map_err(|e| not_a_backup(format!("{MANIFEST}: {e}")))?
    };
    if manifest.format != FORMAT {
        return Err(not_a_backup(format!(
            "format {:?}, expected {FORMAT:?}",
            manifest.format
        )));
    }
    if let Some(bad) = manifest
        .files
        .iter()
        .find(|f| !PAYLOAD.contains(&f.name.as_str()))
    {
        return Err(not_a_backup(format!(
            "it lists an unexpected file {:?}",
            bad.name
        )));
    }
    kek::create_private_dir(data_dir)?;
    // An empty directory made beforehand may be open to others.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("securing {}", data_dir.display())))?;
    }
    for listed in &manifest.files {
        let dest = data_dir.join(&listed.name);
        let partial = sibling(&dest, ".partial");
        {
            let mut entry = zip
                .by_name(&listed.name)
                .map_err(|_| not_a_backup(format!("{} is listed but missing", listed.name)))?;
            let mut out = private_file(&partial)?;
            io::copy(&mut entry, &mut out)
                .and_then(|_| out.sync_all())
                .map_err(io_err(format!("writing {}", partial.display())))?;
        }
        let (bytes, sha256) = sha256_file(&partial)?;
        if bytes != listed.bytes || sha256 != listed.sha256 {
            let _ = fs::remove_file(&partial);
            return Err(not_a_backup(format!(
                "{} does not match its checksum: the file is damaged",
                listed.name
            )));
        }
        fs::rename(&partial, &dest).map_err(io_err(format!("naming {}", dest.display())))?;
    }
    if let Some(key) = master_key {
        let dest = data_dir.join(MASTER_KEY_FILE);
        let text = fs::read(key).map_err(io_err(format!("reading {}", key.display())))?;
        private_file(&dest)?
            .write_all(&text)
            .and_then(|_| fs::File::open(&dest)?.sync_all())
            .map_err(io_err(format!("writing {}", dest.display())))?;
    }
    fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing {}", data_dir.display())))?;
    Ok(manifest)
}
