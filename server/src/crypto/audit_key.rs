//! The audit chain's key file, `data/audit.key`: a random 256-bit HMAC key
//! sealed under the KEK, with the chain it keys and the position it keys
//! from (both bound to the seal, so neither can be changed unnoticed).
//! Never stored in the database; every server on one PostgreSQL database
//! needs a copy of the same file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::kek::Kek;
use super::CryptoError;

pub const AUDIT_KEY_FILE: &str = "audit.key";

/// An opened audit key file.
#[derive(Clone)]
pub struct AuditKeyFile {
    /// The chain it belongs to (`audit_head.chain_id`).
    pub chain_id: String,
    /// The first position whose hash is keyed; earlier ones are SHA-256.
    pub keyed_from: i64,
    pub key: [u8; 32],
}

impl std::fmt::Debug for AuditKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeyFile")
            .field("chain_id", &self.chain_id)
            .field("keyed_from", &self.keyed_from)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    chain_id: String,
    keyed_from: i64,
    /// nonce ‖ ciphertext ‖ tag, base64.
    sealed_key: String,
}

/// A new file only its owner can read, synced with its directory.
pub fn write_new_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn context(chain_id: &str, keyed_from: i64) -> String {
    format!("audit-chain-key:{chain_id}:{keyed_from}")
}

impl AuditKeyFile {
    pub fn generate(chain_id: String, keyed_from: i64) -> AuditKeyFile {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).expect("the system random source works");
        AuditKeyFile {
            chain_id,
            keyed_from,
            key,
        }
    }

    /// The file's content, sealed under `kek`.
    pub fn sealed(&self, kek: &Kek) -> String {
        let sealed = kek.seal(&context(&self.chain_id, self.keyed_from), &self.key);
        let stored = Stored {
            chain_id: self.chain_id.clone(),
            keyed_from: self.keyed_from,
            sealed_key: STANDARD.encode(sealed),
        };
        serde_json::to_string_pretty(&stored).expect("plain data serialises") + "\n"
    }

    /// Writes it, sealed, as a new `<data_dir>/audit.key` (0600, synced);
    /// fails if one exists.
    pub fn write_new(&self, data_dir: &Path, kek: &Kek) -> Result<(), CryptoError> {
        let path = data_dir.join(AUDIT_KEY_FILE);
        write_new_file(&path, &self.sealed(kek))
            .map_err(|e| CryptoError::Config(format!("writing {}: {e}", path.display())))
    }

    /// Opens `<data_dir>/audit.key`; `None` when there is none.
    pub fn load(data_dir: &Path, kek: &Kek) -> Result<Option<AuditKeyFile>, CryptoError> {
        let path = data_dir.join(AUDIT_KEY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CryptoError::Config(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        };
        Self::open(&text, kek)
            .map(Some)
            .map_err(|e| CryptoError::Config(format!("{}: {e}", path.display())))
    }

    /// Opens the content of an audit key file.
    pub fn open(text: &str, kek: &Kek) -> Result<AuditKeyFile, String> {
        let stored: Stored =
            serde_json::from_str(text).map_err(|e| format!("not an audit key file ({e})"))?;
        let sealed = STANDARD
            .decode(&stored.sealed_key)
            .map_err(|_| "sealed_key is not base64".to_string())?;
        let opened = kek
            .open(&context(&stored.chain_id, stored.keyed_from), &sealed)
            .map_err(|_| {
                "does not open with this key-encryption key (or was altered)".to_string()
            })?;
        let key: [u8; 32] = opened
            .try_into()
            .map_err(|_| "the sealed key is not 32 bytes".to_string())?;
        Ok(AuditKeyFile {
            chain_id: stored.chain_id,
            keyed_from: stored.keyed_from,
            key,
        })
    }
}
