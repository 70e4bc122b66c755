//! Cryptography, all through aws-lc-rs: the key-encryption key, programme
//! key pairs sealed at rest, and JWE decryption of phone submissions.

pub mod audit_key;
pub mod jwe;
pub mod kek;
pub mod keys;

pub use kek::CryptoError;
