//! Keys: `keys rotate` and `keys list` for the programmes' encryption
//! keys, and `rekey` for the key-encryption key that seals them.

use std::path::Path;

use clap::Subcommand;

use super::shell::{audit_change, with_db};
use super::CliError;
use crate::auth::sites;
use crate::config::Settings;
use crate::crypto::kek::Kek;
use crate::crypto::keys;
use crate::db::DbConnection;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new current key for a programme (kz or bt); older keys stay
    /// to decrypt what phones encrypted before they synced the new one.
    Rotate { programme: String },
    /// List every key (public parts only).
    List,
    /// Make the key files every server of a new PostgreSQL database
    /// shares (the KEK's and audit.key) into a new directory, before the
    /// first start; copy them into each server's data directory.
    Shared {
        /// The directory to create.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

pub(super) fn run(settings: &Settings, cmd: KeysCommand) -> Result<(), CliError> {
    if let KeysCommand::Shared { out } = &cmd {
        // No database yet: these files are what its servers start from.
        let files = crate::server::make_shared_keys(settings, out)?;
        for file in &files {
            println!("{}", file.display());
        }
        println!(
            "copy these files (mode 0600) into the data directory of every server of the database, then start them; keep a copy apart from the database's backups"
        );
        return Ok(());
    }
    let bits = settings.rsa_key_bits;
    with_db(settings, |conn| {
        // After with_db's checks: a lost master.key is not remade here.
        let kek = Kek::load(settings)?;
        programme_keys(conn, &kek, bits, cmd)
    })
}

fn programme_keys(
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
            keys::ensure_current(conn, kek, &[programme.as_str()], bits)?;
            let info = keys::rotate(conn, kek, &programme, bits)?;
            audit_change(conn, "key_rotated", "key", &info.kid)?;
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
        KeysCommand::Shared { .. } => unreachable!("made without a database above"),
    }
    Ok(())
}

pub(super) fn rekey(
    settings: &Settings,
    new_passphrase_file: Option<&Path>,
) -> Result<(), CliError> {
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
