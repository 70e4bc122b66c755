//! The key-encryption key (KEK): seals the programmes' private keys and
//! the audit chain's key at rest with AES-256-GCM, and is the root the
//! embedded database's key is derived from. It comes from `data/master.key`
//! (made 0600 on first start) or, when configured, from a passphrase
//! through Argon2id (salt in `data/kek.salt`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config::Settings;

/// What can go wrong with keys, here or in `crypto::keys`.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("keys: {0}")]
    Config(String),
    #[error("a sealed key could not be opened")]
    Unseal,
    #[error("key generation failed")]
    KeyGeneration,
}

/// The file holding the KEK when no passphrase is configured.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The Argon2id salt of a passphrase KEK.
pub const SALT_FILE: &str = "kek.salt";

/// How to give a server of a shared database the keys of the others.
pub const SHARED_KEYS_FIX: &str = "Every server of one database needs the same key files: copy master.key (or kek.salt, with the same key_passphrase) and audit.key from the server that made them, or from the directory `casesync keys shared --out DIR` made for a new deployment, into this server's data directory (docs/operations.md, \"Several servers\")";

pub struct Kek {
    key: LessSafeKey,
    /// For keys derived from the KEK (the database's): HMAC-SHA256 under it.
    derive: hmac::Key,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(****)")
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    bytes
}

/// Writes a new small key file (base64, 0600), synced; fails if it exists.
pub fn write_key_file(path: &Path, bytes: &[u8]) -> Result<(), CryptoError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CryptoError::Config(format!("creating {}: {e}", path.display())))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|_| writeln!(file, "{}", STANDARD.encode(bytes)))
        .and_then(|_| file.sync_all())
        .map_err(|e| CryptoError::Config(format!("writing {}: {e}", path.display())))
}

/// Reads a small key file written by `write_key_file`; `None` when absent.
pub fn read_key_file(path: &Path) -> Result<Option<Vec<u8>>, CryptoError> {
    match fs::read_to_string(path) {
        Ok(text) => STANDARD
            .decode(text.trim())
            .map(Some)
            .map_err(|_| CryptoError::Config(format!("{} is not base64", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CryptoError::Config(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

/// Reads a small secret file, creating it (0600) with `make` when missing.
fn read_or_create(path: &Path, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, CryptoError> {
    if let Some(bytes) = read_key_file(path)? {
        return Ok(bytes);
    }
    let bytes = make();
    write_key_file(path, &bytes)?;
    tracing::warn!(file = %path.display(), "created a new key file; back it up: without it the private keys and the database cannot be opened");
    Ok(bytes)
}

/// Makes the data directory (0700) when it is missing.
pub fn create_private_dir(dir: &Path) -> Result<(), CryptoError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CryptoError::Config(format!("creating {}: {e}", dir.display())))
}

/// Where a KEK comes from: a passphrase, or else a key file.
enum Source {
    Passphrase(String),
    KeyFile,
}

fn source(settings: &Settings) -> Result<Source, CryptoError> {
    let passphrase = match (&settings.key_passphrase, &settings.key_passphrase_file) {
        (Some(p), _) => Some(p.expose().to_string()),
        (None, Some(file)) => Some(
            fs::read_to_string(file)
                .map_err(|e| CryptoError::Config(format!("reading {}: {e}", file.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        (None, None) => None,
    };
    Ok(match passphrase {
        Some(pass) => Source::Passphrase(pass),
        None => Source::KeyFile,
    })
}

fn from_passphrase(pass: &str, salt: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if pass.len() < 12 {
        return Err(CryptoError::Config(
            "the key passphrase must be 12 characters or more".into(),
        ));
    }
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(pass.as_bytes(), salt, &mut out)
        .map_err(|e| CryptoError::Config(format!("deriving the key from the passphrase: {e}")))?;
    Ok(out.to_vec())
}

/// The key material a KEK is made from, as files in the data directory:
/// `master.key` (the KEK itself) or `kek.salt` (with the passphrase).
pub fn key_material_file(settings: &Settings) -> Result<PathBuf, CryptoError> {
    Ok(settings.data_dir.join(match source(settings)? {
        Source::Passphrase(_) => SALT_FILE,
        Source::KeyFile => MASTER_KEY_FILE,
    }))
}

impl Kek {
    /// From a passphrase (settings `key_passphrase` or `key_passphrase_file`)
    /// or else from `<data_dir>/master.key`.
    pub fn load(settings: &Settings) -> Result<Kek, CryptoError> {
        create_private_dir(&settings.data_dir)?;
        let key = match source(settings)? {
            Source::Passphrase(pass) => {
                let salt = read_or_create(&settings.data_dir.join(SALT_FILE), || {
                    random::<16>().to_vec()
                })?;
                from_passphrase(&pass, &salt)?
            }
            Source::KeyFile => read_or_create(&settings.data_dir.join(MASTER_KEY_FILE), || {
                random::<32>().to_vec()
            })?,
        };
        Kek::from_bytes(&key)
    }

    /// A new KEK of the same kind as the configured one, and the key
    /// material to store for it (`master.key`'s or `kek.salt`'s content).
    /// A passphrase KEK keeps the passphrase and takes a new salt.
    pub fn generate_like(settings: &Settings) -> Result<(Kek, Vec<u8>), CryptoError> {
        match source(settings)? {
            Source::Passphrase(pass) => {
                let salt = random::<16>().to_vec();
                let kek = Kek::from_bytes(&from_passphrase(&pass, &salt)?)?;
                Ok((kek, salt))
            }
            Source::KeyFile => {
                let key = random::<32>().to_vec();
                Ok((Kek::from_bytes(&key)?, key))
            }
        }
    }

    /// The KEK the given key material (`master.key`'s or `kek.salt`'s
    /// content) makes with the configured passphrase, if any.
    pub fn from_material(settings: &Settings, material: &[u8]) -> Result<Kek, CryptoError> {
        match source(settings)? {
            Source::Passphrase(pass) => Kek::from_bytes(&from_passphrase(&pass, material)?),
            Source::KeyFile => Kek::from_bytes(material),
        }
    }

    pub fn from_bytes(key: &[u8]) -> Result<Kek, CryptoError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| CryptoError::Config("the key-encryption key must be 32 bytes".into()))?;
        Ok(Kek {
            key: LessSafeKey::new(unbound),
            derive: hmac::Key::new(hmac::HMAC_SHA256, key),
        })
    }

    /// A 32-byte key for one purpose, derived from the KEK and never
    /// stored: HMAC-SHA256(KEK, "casesync:" ‖ purpose).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.derive, format!("casesync:{purpose}").as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// nonce ‖ ciphertext ‖ tag; `context` is bound as associated data so a
    /// sealed key cannot be swapped for another's.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = random::<NONCE_LEN>();
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .expect("sealing cannot fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        out
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Unseal);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Unseal)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| CryptoError::Unseal)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_context() {
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        let sealed = kek.seal("kz-1", b"private key");
        assert_eq!(kek.open("kz-1", &sealed).unwrap(), b"private key");
        assert!(kek.open("kz-2", &sealed).is_err());
        let other = Kek::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open("kz-1", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(kek.open("kz-1", &tampered).is_err());
    }

    #[test]
    fn master_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            data_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        let sealed = Kek::load(&settings).unwrap().seal("x", b"secret");
        let mode = fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            Kek::load(&settings).unwrap().open("x", &sealed).unwrap(),
            b"secret"
        );

        let with_pass = Settings {
            key_passphrase: Some(crate::config::Secret::new("correct horse battery staple")),
            ..settings.clone()
        };
        let sealed = Kek::load(&with_pass).unwrap().seal("x", b"secret");
        assert_eq!(
            Kek::load(&with_pass).unwrap().open("x", &sealed).unwrap(),
            b"secret"
        );
        assert!(Kek::load(&settings).unwrap().open("x", &sealed).is_err());
    }

    #[test]
    fn derived_keys_depend_on_the_kek_and_the_purpose() {
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(kek.derive("db"), kek.derive("db"));
        assert_ne!(kek.derive("db"), kek.derive("other"));
        let other = Kek::from_bytes(&[8u8; 32]).unwrap();
        assert_ne!(kek.derive("db"), other.derive("db"));
    }
}
