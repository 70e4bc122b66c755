//! ODK Collect's encrypted submissions (`crypto::odk`): any bytes as a
//! manifest are refused or parsed without a panic, and what parses is
//! decrypted or refused (its files cut from the same bytes); any bytes as
//! a media file and inside the instance round-trip through our encryptor.

use std::sync::OnceLock;

use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use casesync::crypto::odk;

fn key() -> &'static PrivateDecryptingKey {
    static KEY: OnceLock<PrivateDecryptingKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("an RSA key"))
}

pub fn check(data: &[u8]) {
    // The manifest is what comes before the first NUL; each named file gets
    // a slice of what follows, in turn.
    let (manifest, rest) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(parsed) = odk::parse_manifest(manifest) {
        let names: Vec<&str> = parsed
            .media
            .iter()
            .map(String::as_str)
            .chain([parsed.xml_file.as_str()])
            .collect();
        let chunk = rest.len() / names.len() + 1;
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .zip(rest.chunks(chunk).chain(std::iter::repeat(&[][..])))
            .map(|(name, bytes)| (*name, bytes))
            .collect();
        let _ = parsed.decrypt(key(), &files);
    }

    // Round trip: the bytes as a photo, and as text inside the instance.
    let text: String = String::from_utf8_lossy(data)
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ')
        .collect();
    let id = "uuid:00000000-0000-4000-8000-000000000000";
    let xml =
        format!("<data id=\"f\"><t>{text}</t><meta><instanceID>{id}</instanceID></meta></data>");
    let public = key().public_key();
    let sealed = odk::encrypt(
        &public,
        "f",
        Some("1"),
        id,
        xml.as_bytes(),
        &[("p.jpg", data)],
    );
    let parts: Vec<(&str, &[u8])> = sealed
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.bytes.as_slice()))
        .collect();
    let opened = odk::parse_manifest(sealed.manifest.as_bytes())
        .expect("what we encrypt parses")
        .decrypt(key(), &parts)
        .expect("and decrypts");
    assert_eq!(opened.xml.bytes, xml.as_bytes());
    assert_eq!(opened.media[0].bytes, data);
    assert_eq!(opened.media[0].name, "p.jpg");
}
