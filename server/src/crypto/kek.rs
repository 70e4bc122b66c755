//! The key-encryption key (KEK): seals the programmes' private keys at rest
//! with AES-256-GCM. It comes from `data/master.key` (made 0600 on first
//! start) or, when configured, from a passphrase through Argon2id.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::CryptoError;
use crate::config::Settings;

pub struct Kek {
    key: LessSafeKey,
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

/// Reads a small secret file, creating it (0600) with `make` when missing.
fn read_or_create(path: &Path, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, CryptoError> {
    match fs::read_to_string(path) {
        Ok(text) => STANDARD
            .decode(text.trim())
            .map_err(|_| CryptoError::Config(format!("{} is not base64", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make();
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| CryptoError::Config(format!("creating {}: {e}", path.display())))?;
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .and_then(|_| writeln!(file, "{}", STANDARD.encode(&bytes)))
                .and_then(|_| file.sync_all())
                .map_err(|e| CryptoError::Config(format!("writing {}: {e}", path.display())))?;
            tracing::warn!(file = %path.display(), "created a new key file; back it up: without it the private keys cannot be opened");
            Ok(bytes)
        }
        Err(e) => Err(CryptoError::Config(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

impl Kek {
    /// From a passphrase (settings `key_passphrase` or `key_passphrase_file`)
    /// or else from `<data_dir>/master.key`.
    pub fn load(settings: &Settings) -> Result<Kek, CryptoError> {
        fs::create_dir_all(&settings.data_dir).map_err(|e| {
            CryptoError::Config(format!("creating {}: {e}", settings.data_dir.display()))
        })?;
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
        let key = match passphrase {
            Some(pass) => {
                if pass.len() < 12 {
                    return Err(CryptoError::Config(
                        "the key passphrase must be 12 characters or more".into(),
                    ));
                }
                let salt = read_or_create(&settings.data_dir.join("kek.salt"), || {
                    random::<16>().to_vec()
                })?;
                let mut out = [0u8; 32];
                argon2::Argon2::default()
                    .hash_password_into(pass.as_bytes(), &salt, &mut out)
                    .map_err(|e| {
                        CryptoError::Config(format!("deriving the key from the passphrase: {e}"))
                    })?;
                out.to_vec()
            }
            None => read_or_create(&settings.data_dir.join("master.key"), || {
                random::<32>().to_vec()
            })?,
        };
        Kek::from_bytes(&key)
    }

    pub fn from_bytes(key: &[u8]) -> Result<Kek, CryptoError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| CryptoError::Config("the key-encryption key must be 32 bytes".into()))?;
        Ok(Kek {
            key: LessSafeKey::new(unbound),
        })
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
}
