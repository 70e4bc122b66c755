//! ODK Collect's submission encryption (`crypto::odk`, docs/odk.md "ODK
//! encryption"): what an independent Collect-style encryptor in Node
//! (tests/odk/collect-encrypt.mjs, node:crypto only) writes opens with our
//! code; what our encryptor writes opens with the OpenSSL command line; and
//! each bad input of issue #17 §4 is refused with its own error.
//! `.ci/run` sets CASESYNC_TEST_REQUIRE_ODK=1, so CI fails when node or
//! openssl is missing; elsewhere those two tests say they were skipped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use casesync::crypto::odk::{self, Decrypted, Encrypted, OdkError};

fn key() -> &'static PrivateDecryptingKey {
    static KEY: OnceLock<PrivateDecryptingKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap())
}

fn other_key() -> &'static PrivateDecryptingKey {
    static KEY: OnceLock<PrivateDecryptingKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap())
}

const INSTANCE_ID: &str = "uuid:6f1c1a52-0b8e-4c1e-9a51-2f0d3e0c9b11";

fn instance(id: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0' ?><data id=\"kz.referral\" version=\"2021.1\" \
         xmlns:orx=\"http://openrosa.org/xforms\"><child><name>Test Child</name></child>\
         <photo>photo.jpg</photo><orx:meta><orx:instanceID>{id}</orx:instanceID></orx:meta></data>"
    )
    .into_bytes()
}

fn photo() -> Vec<u8> {
    (0..5000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn signature() -> Vec<u8> {
    b"\x89PNG a drawn signature".to_vec()
}

fn media() -> Vec<(&'static str, Vec<u8>)> {
    vec![("photo.jpg", photo()), ("signature.png", signature())]
}

fn encrypt(key: [u8; 32], wrapped: &str, id: &str, media: &[(&str, Vec<u8>)]) -> Encrypted {
    let media: Vec<(&str, &[u8])> = media.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    odk::encrypt_with(
        &key_pub(),
        &key,
        wrapped,
        "kz.referral",
        Some("2021.1"),
        id,
        &instance(id),
        &media,
    )
}

fn key_pub() -> aws_lc_rs::rsa::PublicEncryptingKey {
    key().public_key()
}

fn sample() -> Encrypted {
    let media = media();
    let media: Vec<(&str, &[u8])> = media.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    odk::encrypt(
        &key_pub(),
        "kz.referral",
        Some("2021.1"),
        INSTANCE_ID,
        &instance(INSTANCE_ID),
        &media,
    )
}

fn open_with(
    manifest: &str,
    files: &[odk::PlainFile],
    key: &PrivateDecryptingKey,
) -> Result<Decrypted, OdkError> {
    let parts: Vec<(&str, &[u8])> = files
        .iter()
        .map(|f| (f.name.as_str(), f.bytes.as_slice()))
        .collect();
    odk::parse_manifest(manifest.as_bytes())?.decrypt(key, &parts)
}

fn open(encrypted: &Encrypted) -> Result<Decrypted, OdkError> {
    open_with(&encrypted.manifest, &encrypted.files, key())
}

fn file_mut<'a>(encrypted: &'a mut Encrypted, name: &str) -> &'a mut Vec<u8> {
    &mut encrypted
        .files
        .iter_mut()
        .find(|f| f.name == name)
        .unwrap()
        .bytes
}

fn assert_opens_to_sample(opened: &Decrypted) {
    assert_eq!(opened.xml.name, "submission.xml");
    assert_eq!(opened.xml.bytes, instance(INSTANCE_ID));
    let names: Vec<&str> = opened.media.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["photo.jpg", "signature.png"]);
    assert_eq!(opened.media[0].bytes, photo());
    assert_eq!(opened.media[1].bytes, signature());
}

#[test]
fn our_encryption_round_trips_in_collects_format() {
    let encrypted = sample();
    let names: Vec<&str> = encrypted.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["photo.jpg.enc", "signature.png.enc", "submission.xml.enc"]
    );
    assert!(encrypted.manifest.contains(odk::COLLECT_NAMESPACE));
    assert!(encrypted.manifest.contains("<orx:instanceID>"));
    let manifest = odk::parse_manifest(encrypted.manifest.as_bytes()).unwrap();
    assert_eq!(manifest.form_id, "kz.referral");
    assert_eq!(manifest.version.as_deref(), Some("2021.1"));
    assert_eq!(manifest.instance_id, INSTANCE_ID);
    assert_eq!(manifest.media, ["photo.jpg.enc", "signature.png.enc"]);
    // Parts arrive in any order; the manifest decides the IVs.
    let mut shuffled = encrypted.clone();
    shuffled.files.reverse();
    assert_opens_to_sample(&open(&shuffled).unwrap());
    // Without media, and a form without a version.
    let bare = odk::encrypt(
        &key_pub(),
        "kz.referral",
        None,
        INSTANCE_ID,
        &instance(INSTANCE_ID),
        &[],
    );
    assert!(!bare.manifest.contains("version="));
    let opened = open(&bare).unwrap();
    assert!(opened.media.is_empty());
    assert_eq!(opened.xml.bytes, instance(INSTANCE_ID));
}

// ---- Interop -------------------------------------------------------------

/// Whether `tool` runs; when CASESYNC_TEST_REQUIRE_ODK=1 (CI) it must.
fn tool_available(tool: &str, version_arg: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("CASESYNC_TEST_REQUIRE_ODK").is_ok_and(|v| v == "1") {
        panic!("{tool} is required (CASESYNC_TEST_REQUIRE_ODK=1) but does not run");
    }
    found
}

#[test]
fn a_submission_encrypted_as_collect_does_in_node_opens() {
    if !tool_available("node", "--version") {
        eprintln!("SKIPPED: node is not installed (CI has it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pub.der"), key_pub().as_der().unwrap().as_ref()).unwrap();
    std::fs::write(d.join("instance.xml"), instance(INSTANCE_ID)).unwrap();
    std::fs::write(d.join("photo.jpg"), photo()).unwrap();
    std::fs::write(d.join("signature.png"), signature()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/odk/collect-encrypt.mjs");
    let out = Command::new("node")
        .arg(script)
        .args(["pub.der", "kz.referral", "2021.1", "instance.xml", "out"])
        .args(["photo.jpg", "signature.png"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read(d.join("out").join(name)).unwrap();
    let manifest = String::from_utf8(read("manifest.xml")).unwrap();
    // Enketo's namespace, another element order: matched by local name.
    assert!(manifest.contains(odk::SPEC_NAMESPACE));
    let files: Vec<odk::PlainFile> = ["photo.jpg.enc", "signature.png.enc", "submission.xml.enc"]
        .into_iter()
        .map(|name| odk::PlainFile {
            name: name.into(),
            bytes: read(name),
        })
        .collect();
    assert_opens_to_sample(&open_with(&manifest, &files, key()).unwrap());
}

/// Runs openssl with `args` in `dir`, returning its standard output.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn our_encryption_opens_with_the_openssl_command_line() {
    if !tool_available("openssl", "version") {
        eprintln!("SKIPPED: openssl is not installed (CI has it)");
        return;
    }
    let encrypted = sample();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("private.der"), key().as_der().unwrap().as_ref()).unwrap();
    let between = |open: &str, close: &str| {
        let start = encrypted.manifest.find(open).unwrap() + open.len();
        let end = start + encrypted.manifest[start..].find(close).unwrap();
        encrypted.manifest[start..end].to_string()
    };
    use base64::Engine;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(between("<base64EncryptedKey>", "<"))
        .unwrap();
    std::fs::write(d.join("key.wrapped"), wrapped).unwrap();
    let key = openssl(
        d,
        &[
            "pkeyutl",
            "-decrypt",
            "-keyform",
            "DER",
            "-inkey",
            "private.der",
            "-in",
            "key.wrapped",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
    );
    assert_eq!(key.len(), 32);
    let instance_id = between("<orx:instanceID>", "<");
    let mut seed_input = instance_id.into_bytes();
    seed_input.extend_from_slice(&key);
    std::fs::write(d.join("seed.in"), seed_input).unwrap();
    let mut iv = openssl(d, &["dgst", "-md5", "-binary", "seed.in"]);
    assert_eq!(iv.len(), 16);
    let expected = [photo(), signature(), instance(INSTANCE_ID)];
    for (index, file) in encrypted.files.iter().enumerate() {
        iv[index % 16] = iv[index % 16].wrapping_add(1);
        std::fs::write(d.join(&file.name), &file.bytes).unwrap();
        let mut plain = openssl(
            d,
            &[
                "enc",
                "-d",
                "-aes-256-cfb",
                "-nopad",
                "-K",
                &hex::encode(&key),
                "-iv",
                &hex::encode(&iv),
                "-in",
                &file.name,
            ],
        );
        let pad = *plain.last().unwrap() as usize;
        assert!((1..=16).contains(&pad), "{}", file.name);
        assert!(plain[plain.len() - pad..]
            .iter()
            .all(|&b| b as usize == pad));
        plain.truncate(plain.len() - pad);
        assert_eq!(plain, expected[index], "{}", file.name);
    }
}

// ---- The bad-input set (issue #17 §4) --------------------------------------

#[test]
fn another_programmes_key_is_refused_as_the_wrong_key() {
    let encrypted = sample();
    assert_eq!(
        open_with(&encrypted.manifest, &encrypted.files, other_key()),
        Err(OdkError::WrongKey)
    );
}

#[test]
fn a_key_wrapped_with_mgf1_sha1_is_named() {
    let k = [9u8; 32];
    use base64::Engine;
    let wrapped =
        base64::engine::general_purpose::STANDARD.encode(odk::mgf1_sha1::wrap(&key_pub(), &k));
    let encrypted = encrypt(k, &wrapped, INSTANCE_ID, &media());
    assert_eq!(open(&encrypted), Err(OdkError::Mgf1Sha1Wrap));
    // The same wrap under another key is only a wrong key.
    assert_eq!(
        open_with(&encrypted.manifest, &encrypted.files, other_key()),
        Err(OdkError::WrongKey)
    );
}

#[test]
fn a_key_that_is_not_32_bytes_is_refused() {
    let k = [9u8; 32];
    let encrypted = encrypt(
        k,
        &odk::wrap_key(&key_pub(), &k[..16]),
        INSTANCE_ID,
        &media(),
    );
    assert_eq!(open(&encrypted), Err(OdkError::KeyLength(16)));
}

#[test]
fn bad_padding_is_refused_naming_the_file() {
    let mut encrypted = sample();
    // CFB: flipping a ciphertext bit flips the same plaintext bit, here in
    // the last padding byte.
    let photo = file_mut(&mut encrypted, "photo.jpg.enc");
    *photo.last_mut().unwrap() ^= 0x20;
    assert_eq!(
        open(&encrypted),
        Err(OdkError::BadPadding("photo.jpg.enc".into()))
    );
}

#[test]
fn files_encrypted_in_another_order_than_the_manifest_lists_are_named() {
    let encrypted = sample();
    // The phone encrypted photo then signature; its manifest says the
    // reverse.
    let swapped = encrypted.manifest.replace(
        "<media><file>photo.jpg.enc</file></media><media><file>signature.png.enc</file></media>",
        "<media><file>signature.png.enc</file></media><media><file>photo.jpg.enc</file></media>",
    );
    assert_ne!(swapped, encrypted.manifest);
    assert_eq!(
        open_with(&swapped, &encrypted.files, key()),
        Err(OdkError::OutOfOrder)
    );
}

#[test]
fn a_form_inside_with_another_instance_id_is_refused() {
    let k = [3u8; 32];
    let wrapped = odk::wrap_key(&key_pub(), &k);
    let media = media();
    let media: Vec<(&str, &[u8])> = media.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    // A correctly signed manifest for one instanceID around a form of another.
    let encrypted = odk::encrypt_with(
        &key_pub(),
        &k,
        &wrapped,
        "kz.referral",
        Some("2021.1"),
        INSTANCE_ID,
        &instance("uuid:00000000-0000-4000-8000-00000000beef"),
        &media,
    );
    assert_eq!(open(&encrypted), Err(OdkError::InstanceIdMismatch));
}

#[test]
fn a_file_swapped_after_signing_fails_the_signature() {
    let k = [5u8; 32];
    let wrapped = odk::wrap_key(&key_pub(), &k);
    let signed = encrypt(k, &wrapped, INSTANCE_ID, &media());
    let mut other_photo = media();
    other_photo[0].1[100] ^= 1;
    let other = encrypt(k, &wrapped, INSTANCE_ID, &other_photo);
    let mut tampered = signed.clone();
    *file_mut(&mut tampered, "photo.jpg.enc") = other.files[0].bytes.clone();
    assert_eq!(open(&tampered), Err(OdkError::SignatureMismatch));
    // A signature that does not open with the key at all.
    let unreadable = signed.manifest.replace(
        "<base64EncryptedElementSignature>",
        "<base64EncryptedElementSignature>AAAA",
    );
    assert_eq!(
        open_with(&unreadable, &signed.files, key()),
        Err(OdkError::SignatureUnreadable)
    );
}

#[test]
fn an_empty_part_is_refused_naming_the_file() {
    let mut encrypted = sample();
    file_mut(&mut encrypted, "signature.png.enc").clear();
    assert_eq!(
        open(&encrypted),
        Err(OdkError::EmptyFile("signature.png.enc".into()))
    );
}

#[test]
fn a_truncated_file_is_refused_naming_it() {
    let mut encrypted = sample();
    let xml = file_mut(&mut encrypted, "submission.xml.enc");
    xml.truncate(xml.len() - 5);
    assert_eq!(
        open(&encrypted),
        Err(OdkError::Truncated("submission.xml.enc".into()))
    );
}

#[test]
fn missing_and_unexpected_files_are_named() {
    let encrypted = sample();
    let mut missing = encrypted.clone();
    missing.files.remove(0);
    assert_eq!(
        open(&missing),
        Err(OdkError::MissingFile("photo.jpg.enc".into()))
    );
    let mut extra = encrypted.clone();
    extra.files.push(odk::PlainFile {
        name: "other.jpg.enc".into(),
        bytes: vec![0; 16],
    });
    assert_eq!(
        open(&extra),
        Err(OdkError::UnexpectedFile("other.jpg.enc".into()))
    );
}

#[test]
fn each_refusal_has_its_own_message_and_no_case_data() {
    let errors = [
        OdkError::WrongKey,
        OdkError::Mgf1Sha1Wrap,
        OdkError::KeyLength(16),
        OdkError::BadPadding("photo.jpg.enc".into()),
        OdkError::OutOfOrder,
        OdkError::InstanceIdMismatch,
        OdkError::SignatureMismatch,
        OdkError::EmptyFile("photo.jpg.enc".into()),
        OdkError::Truncated("photo.jpg.enc".into()),
    ];
    let messages: std::collections::BTreeSet<String> =
        errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), errors.len());
    for message in &messages {
        assert!(!message.contains("Test Child"), "{message}");
        assert!(!message.contains(INSTANCE_ID), "{message}");
    }
}
