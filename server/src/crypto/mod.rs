//! Cryptography, all through aws-lc-rs: the key-encryption key, programme
//! key pairs sealed at rest, and JWE decryption of phone submissions.

pub mod audit_key;
pub mod jwe;
pub mod kek;
pub mod keys;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("keys: {0}")]
    Config(String),
    #[error("a sealed key could not be opened")]
    Unseal,
    #[error("key generation failed")]
    KeyGeneration,
}
