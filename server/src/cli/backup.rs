//! Data at rest (#14 items 8, 17): `backup` writes a consistent copy of
//! the embedded database with the sealed keys, `restore` unpacks one into
//! a new data directory and checks that it opens and its audit chain holds.

use std::path::Path;

use super::shell::open_to_verify;
use super::CliError;
use crate::audit;
use crate::config::Settings;

pub(super) fn backup(settings: &Settings, out: &Path) -> Result<(), CliError> {
    let manifest = crate::backup::backup(settings, out)?;
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

pub(super) fn restore(
    settings: &Settings,
    file: &Path,
    data_dir: &Path,
    master_key: Option<&Path>,
) -> Result<(), CliError> {
    let manifest = crate::backup::restore(file, data_dir, master_key)?;
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
    let (key, mut conn) = open_to_verify(&restored)?;
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
