//! Password hashing with Argon2id (PHC string format, salted per password).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 256;

pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password")
        .to_string()
}

/// Constant-time check of a password against a stored PHC hash.
pub fn verify(password: &str, stored_hash: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hash of a throwaway password, verified against when the account does not
/// exist, so a login takes as long for an unknown user as for a known one.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password that never matches"))
}

/// Why a new password is refused, or `None` when it is acceptable.
pub fn weakness(password: &str, username: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Some(format!(
            "must be at least {MIN_PASSWORD_LEN} characters long"
        ));
    }
    if chars > MAX_PASSWORD_LEN {
        return Some(format!(
            "must be at most {MAX_PASSWORD_LEN} characters long"
        ));
    }
    if password.eq_ignore_ascii_case(username) {
        return Some("must not be the username".into());
    }
    None
}

/// A random password for first-start admins and resets: 20 characters from an
/// alphabet without look-alikes (0/O, 1/l/I), about 115 bits.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_right_password() {
        let h = hash("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(weakness(&a, "admin").is_none());
        assert!(weakness("short", "admin").is_some());
        assert!(weakness("Administrator", "administrator").is_some());
    }
}
