//! `casesync rekey`: rotates the key-encryption key, and with it everything
//! under it: the programmes' private keys are re-sealed, the audit chain's
//! key file is re-sealed (the chain's key itself stays, so old rows still
//! verify), and the embedded database is re-encrypted under the key derived
//! from the new KEK. All or nothing: the new material is written beside
//! the old as `*.next`; the database's change is the single commit point
//! (an atomic rename of the re-encrypted file, or PostgreSQL's commit);
//! only then do the `.next` files take their place. A start that finds
//! `.next` files finishes or discards that rekey by which KEK the database
//! opens with (`finish_interrupted`).

use std::fs;
use std::path::{Path, PathBuf};

use super::{self as server, StartError};
use crate::config::{DatabaseTarget, Secret, Settings};
use crate::crypto::audit_key::{write_new_file, AuditKeyFile, AUDIT_KEY_FILE};
use crate::crypto::kek::{self, Kek};
use crate::crypto::keys;
use crate::db::{self, encryption, write_tx, Database, DatabaseKey};

fn next_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

fn remove_if_there(path: &Path) -> Result<(), StartError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StartError::Io {
            context: format!("removing {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn bootstrap_err(e: impl std::fmt::Display) -> StartError {
    StartError::Bootstrap(e.to_string())
}

/// The files a rekey replaces: the KEK's material and the audit key.
fn replaced_files(settings: &Settings) -> Result<[PathBuf; 2], StartError> {
    Ok([
        kek::key_material_file(settings)?,
        settings.data_dir.join(AUDIT_KEY_FILE),
    ])
}

/// Whether the database opens, and its private keys unseal, under `kek`.
fn database_is_under(settings: &Settings, kek: &Kek) -> Result<bool, StartError> {
    let target = settings.database_target()?;
    if let DatabaseTarget::Sqlite(path) = &target {
        if !path.exists() {
            return Ok(false);
        }
    }
    let database = Database::new(target, Some(DatabaseKey::derived_from(kek)));
    let Ok(mut conn) = db::open_as_is(&database) else {
        return Ok(false);
    };
    keys::all_open_with(&mut conn, kek).map_err(bootstrap_err)
}

/// Finishes (or discards) a rekey that stopped half way; called before the
/// KEK is loaded.
pub fn finish_interrupted(settings: &Settings) -> Result<(), StartError> {
    let [material, audit_key] = replaced_files(settings)?;
    let next = next_of(&material);
    let Some(next_material) = kek::read_key_file(&next)? else {
        return Ok(());
    };
    let next_kek = Kek::from_material(settings, &next_material)?;
    if database_is_under(settings, &next_kek)? {
        for path in [&material, &audit_key] {
            if next_of(path).exists() {
                fs::rename(next_of(path), path).map_err(|e| StartError::Io {
                    context: format!("renaming {}", next_of(path).display()),
                    source: e,
                })?;
            }
        }
        sync_dir(&settings.data_dir)?;
        tracing::warn!(
            "finished a key rotation (`casesync rekey`) that was interrupted after its commit"
        );
    } else {
        for path in [&material, &audit_key] {
            remove_if_there(&next_of(path))?;
        }
        tracing::warn!("discarded a key rotation (`casesync rekey`) that was interrupted before its commit; the old key stays");
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StartError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StartError::Io {
            context: format!("syncing {}", dir.display()),
            source: e,
        })
}

/// What a rekey did.
#[derive(Debug)]
pub struct Rekeyed {
    pub private_keys: usize,
    pub database_reencrypted: bool,
    pub audit_key_resealed: bool,
}

/// Rotates the KEK. With a passphrase KEK, `new_passphrase` is required
/// (the settings must name it afterwards); with master.key it must be None.
/// Refused while a server runs on this data directory.
pub fn rekey(settings: &Settings, new_passphrase: Option<String>) -> Result<Rekeyed, StartError> {
    kek::create_private_dir(&settings.data_dir)?;
    let _lock = server::lock_data_dir(&settings.data_dir, true)?;
    let storage = server::open_storage(settings)?;
    let old = storage.kek;
    let [material, audit_key_path] = replaced_files(settings)?;
    let next_settings = match (material.ends_with(kek::SALT_FILE), new_passphrase) {
        (true, Some(pass)) => Settings {
            key_passphrase: Some(Secret::new(pass)),
            key_passphrase_file: None,
            ..settings.clone()
        },
        (true, None) => {
            return Err(StartError::DataDir(
                "the key-encryption key comes from a passphrase: give the new one with --new-passphrase-file".into(),
            ))
        }
        (false, Some(_)) => {
            return Err(StartError::DataDir(
                "the key-encryption key is data/master.key: a rekey makes a new one, and takes no passphrase".into(),
            ))
        }
        (false, None) => settings.clone(),
    };

    // Opened (and a plaintext database encrypted) under the old key first,
    // so the database is in the state the old key describes.
    let mut conn = db::open_one(&storage.database)?;
    server::prepare_database(&mut conn)?;
    drop(conn);

    let (new, new_material) = Kek::generate_like(&next_settings)?;
    for path in [&material, &audit_key_path] {
        remove_if_there(&next_of(path))?;
    }
    kek::write_key_file(&next_of(&material), &new_material)?;
    let audit_key = AuditKeyFile::load(&settings.data_dir, &old)?;
    if let Some(file) = &audit_key {
        write_new_file(&next_of(&audit_key_path), &file.sealed(&new)).map_err(|e| {
            StartError::Io {
                context: format!("writing {}", next_of(&audit_key_path).display()),
                source: e,
            }
        })?;
    }
    sync_dir(&settings.data_dir)?;

    let discard = |err: StartError| {
        for path in [&material, &audit_key_path] {
            let _ = fs::remove_file(next_of(path));
        }
        err
    };
    let new_db_key = DatabaseKey::derived_from(&new);
    let (private_keys, database_reencrypted) = match &storage.database.target {
        DatabaseTarget::Sqlite(path) => {
            let old_db_key = storage.database.key.clone().expect("SQLite is keyed");
            let copy = encryption::rekey_copy(path, &old_db_key, &new_db_key)
                .map_err(|e| discard(e.into()))?;
            let resealed = (|| {
                let mut conn = db::open_as_is(&Database::new(
                    DatabaseTarget::Sqlite(copy.clone()),
                    Some(new_db_key.clone()),
                ))?;
                write_tx(&mut conn, |c| keys::reseal_all(c, &old, &new)).map_err(bootstrap_err)
            })();
            let resealed = match resealed {
                Ok(n) => n,
                Err(e) => {
                    let _ = fs::remove_file(&copy);
                    return Err(discard(e));
                }
            };
            fs::File::open(&copy)
                .and_then(|f| f.sync_all())
                .map_err(|e| {
                    discard(StartError::Io {
                        context: format!("syncing {}", copy.display()),
                        source: e,
                    })
                })?;
            // The commit point.
            encryption::commit_rekeyed(&copy, path).map_err(|e| discard(e.into()))?;
            (resealed, true)
        }
        DatabaseTarget::Postgres(_) => {
            let mut conn = db::open_one(&storage.database).map_err(|e| discard(e.into()))?;
            // The commit point.
            let resealed = write_tx(&mut conn, |c| keys::reseal_all(c, &old, &new))
                .map_err(|e| discard(bootstrap_err(e)))?;
            (resealed, false)
        }
    };
    for path in [&material, &audit_key_path] {
        if next_of(path).exists() {
            fs::rename(next_of(path), path).map_err(|e| StartError::Io {
                context: format!("renaming {}", next_of(path).display()),
                source: e,
            })?;
        }
    }
    sync_dir(&settings.data_dir)?;
    Ok(Rekeyed {
        private_keys,
        database_reencrypted,
        audit_key_resealed: audit_key.is_some(),
    })
}
