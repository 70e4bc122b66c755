//! Password hashing with Argon2id (PHC string format, salted per password).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 256;

/// A password to store, hashed before the write transaction that stores
/// it: Argon2 takes tens of milliseconds, and the embedded database has one
/// write lock that every submission waits for (#19).
pub struct NewPassword {
    pub plain: String,
    pub hash: String,
    /// Made by the server (a one-time password, shown once), not chosen.
    pub generated: bool,
}

impl NewPassword {
    /// `chosen`, or a generated one, with its hash. Slow: run it on the CPU
    /// pool (`AppState::hashed_password`), never inside a transaction.
    pub fn hashed(chosen: Option<String>) -> NewPassword {
        let (plain, generated) = match chosen {
            Some(p) => (p, false),
            None => (generate(), true),
        };
        NewPassword {
            hash: hash(&plain),
            plain,
            generated,
        }
    }
}

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

/// The lowest zxcvbn score accepted for a new password: 3 is "safely
/// unguessable" (about 10^8 to 10^10 guesses), enough against an online
/// attacker and a stolen hash of a slow Argon2id.
pub const MIN_SCORE: zxcvbn::Score = zxcvbn::Score::Three;

/// Words an attacker of this server tries first, besides the user's own.
const SERVER_WORDS: [&str; 1] = ["casesync"];

/// Why a new password is refused, or `None` when it is acceptable.
/// `personal` names the words an attacker would try for this user first: the
/// username and the codes of the user's sites. The answer is plain words a
/// user can act on (zxcvbn's warning and suggestions).
pub fn weakness(password: &str, username: &str, personal: &[&str]) -> Option<String> {
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
    // Site codes also as typed without their separators (KZ-CAM-ALA, kzcamala).
    let squeezed: Vec<String> = personal
        .iter()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect())
        .collect();
    let mut words: Vec<&str> = vec![username];
    words.extend_from_slice(personal);
    words.extend(squeezed.iter().map(String::as_str));
    words.extend_from_slice(&SERVER_WORDS);
    let estimate = zxcvbn::zxcvbn(password, &words);
    if estimate.score() >= MIN_SCORE {
        return None;
    }
    let lowered = password.to_lowercase();
    let mut why = vec!["is too easy to guess.".to_string()];
    if let Some(word) = words
        .iter()
        .find(|w| w.len() >= 3 && lowered.contains(&w.to_lowercase()))
    {
        why.push(format!(
            "It contains {word:?}, which an attacker of this server tries first."
        ));
    }
    if let Some(feedback) = estimate.feedback() {
        why.extend(feedback.warning().map(|w| w.to_string()));
        why.extend(feedback.suggestions().iter().map(|s| s.to_string()));
    }
    if why.len() == 1 {
        why.push("Add another word or two. Uncommon words are better.".into());
    }
    Some(why.join(" "))
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
        assert!(weakness(&a, "admin", &[]).is_none());
        assert!(weakness("short", "admin", &[]).is_some());
        assert!(weakness("Administrator", "administrator", &[]).is_some());
    }

    #[test]
    fn guessable_passwords_are_refused_saying_why() {
        for weak in ["password12", "1234567890", "qwertyuiop"] {
            let why = weakness(weak, "aigerim", &[]).expect(weak);
            assert!(why.starts_with("is too easy to guess."), "{weak}: {why}");
            assert!(why.len() > "is too easy to guess.".len(), "{weak}: {why}");
        }
        // The username, the user's sites and the server's name are the
        // first words an attacker tries.
        assert!(zxcvbn::zxcvbn("aigerimcasesync", &[]).score() >= MIN_SCORE);
        let why = weakness("aigerimcasesync", "aigerim", &["KZ-CAM-ALA"])
            .expect("built of personal words");
        assert!(why.contains("contains \"aigerim\""), "{why}");
        assert!(weakness("kzcamalacasesync", "dorji", &["KZ-CAM-ALA"]).is_some());
        assert!(weakness("tulip mortar glacier velvet", "aigerim", &["KZ-CAM-ALA"]).is_none());
        // Every generated one-time password passes.
        for _ in 0..200 {
            assert!(weakness(&generate(), "aigerim", &["KZ-CAM-ALA"]).is_none());
        }
    }
}
