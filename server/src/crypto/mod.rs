//! Cryptography, all through aws-lc-rs: the key-encryption key, programme
//! key pairs sealed at rest, JWE decryption of phone submissions and ODK
//! Collect's submission encryption (`odk`).

pub mod audit_key;
pub mod jwe;
pub mod kek;
pub mod keys;
pub mod odk;

pub use kek::CryptoError;
