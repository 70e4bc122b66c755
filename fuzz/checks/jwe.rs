//! The JWE parser (`crypto::jwe`): any text is refused or parsed without a
//! panic, and what parses is decrypted or refused; any plaintext encrypted
//! for a key decrypts to itself.

use std::sync::OnceLock;

use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use casesync::crypto::jwe;

fn key() -> &'static PrivateDecryptingKey {
    static KEY: OnceLock<PrivateDecryptingKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("an RSA key"))
}

pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(parsed) = jwe::parse(text) {
            let _ = parsed.decrypt(key());
        }
    }
    // Round trip: the bytes as a plaintext, under a kid made of them too.
    let kid: String = data
        .iter()
        .take(16)
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    let kid = if kid.is_empty() { "k".to_string() } else { kid };
    let public = key().public_key();
    let compact = jwe::encrypt(data, &kid, &public);
    let parsed = jwe::parse(&compact).expect("what we encrypt parses");
    assert_eq!(parsed.kid, kid);
    assert_eq!(parsed.decrypt(key()).expect("and decrypts"), data);
}
