//! ODK submission encryption, both directions, byte for byte as ODK Collect
//! does it (`EncryptionUtils.java`; xforms-spec "Encryption"; docs/odk.md,
//! "ODK encryption"): a random 32-byte key K wrapped with RSA-OAEP
//! (SHA-256, MGF1-SHA-256, empty label), AES-256-CFB128 with PKCS#7
//! padding, IVs from MD5(instanceID ‖ K), and an "element signature": the
//! OAEP-wrapped MD5 of the manifest's fields and each file's MD5.
//!
//! The manifest is the `xml_submission_file` part of Collect's upload;
//! `parse_manifest` reads it, `Manifest::decrypt` opens the files it names.
//! Every refusal is its own [`OdkError`], worded for the coordinator who
//! must act on it and never carrying case data.

use std::borrow::Cow;

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256,
};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use quick_xml::events::Event;
use quick_xml::Reader;

/// The namespace Collect writes on the manifest's root; the spec and Enketo
/// write [`SPEC_NAMESPACE`]. Elements are matched by local name either way.
pub const COLLECT_NAMESPACE: &str = "http://www.opendatakit.org/xforms/encrypted";
pub const SPEC_NAMESPACE: &str = "http://opendatakit.org/submissions";

/// A manifest lists file names and two RSA blocks; 64 KiB holds hundreds of
/// files, far more than a form has.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Files one manifest may name (Collect sends at most 100 per request).
pub const MAX_MEDIA_FILES: usize = 500;
const MAX_DEPTH: usize = 8;
const MAX_FILE_NAME: usize = 255;
/// Telling "encrypted in another order" from "changed" tries every order
/// of the files' IVs; only for a few files of bounded total size.
const MAX_FILES_TO_REORDER: usize = 6;
const MAX_BYTES_TO_REORDER: usize = 32 * 1024 * 1024;

const KEY_BYTES: usize = 32;
const BLOCK: usize = 16;

/// Why an encrypted ODK submission was refused. Messages name the manifest
/// element or the file at fault and what to do; never a value from a form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OdkError {
    #[error("the encrypted submission's manifest is larger than {MAX_MANIFEST_BYTES} bytes; ODK manifests are small, so this is not one")]
    ManifestTooLarge,
    #[error("the encrypted submission's manifest declares a DOCTYPE or an entity; ODK manifests never do, so it is refused")]
    ManifestDoctype,
    #[error(
        "the encrypted submission's manifest is not well-formed XML (at byte {position}): {reason}"
    )]
    ManifestXml { position: u64, reason: String },
    #[error("the submission's manifest is not an encrypted ODK submission: its root must be <data encrypted=\"yes\">")]
    NotEncrypted,
    #[error("the encrypted submission's manifest has no <{0}>; the sending app did not write a complete ODK manifest")]
    ManifestMissing(&'static str),
    #[error("the encrypted submission's manifest has <{0}> more than once")]
    ManifestRepeated(&'static str),
    #[error("the encrypted submission's manifest's <{0}> is not base64")]
    ManifestBase64(&'static str),
    #[error("the encrypted submission's manifest names more than {MAX_MEDIA_FILES} files")]
    TooManyFiles,
    #[error("the encrypted submission's manifest names a file {0:?}: file names must end in .enc, be at most 255 bytes and hold no path or control characters")]
    BadFileName(String),
    #[error("the encrypted submission's manifest names the file {0:?} twice")]
    RepeatedFileName(String),
    #[error("the submission's key does not open with this programme's key: the phone's form was encrypted for another key (a rotated or another programme's key: update the forms on the phone), or the key block was damaged")]
    WrongKey,
    #[error("the submission's key is wrapped with RSA-OAEP using MGF1-SHA-1; ODK Collect uses MGF1-SHA-256, so the sending app is not a compatible ODK client")]
    Mgf1Sha1Wrap,
    #[error("the submission's key is {0} bytes long, not 32 (AES-256): the sending app is not a compatible ODK client")]
    KeyLength(usize),
    #[error("the file {0:?} named in the manifest was not sent; send the submission again from the phone")]
    MissingFile(String),
    #[error("the file {0:?} was sent but the manifest does not name it")]
    UnexpectedFile(String),
    #[error("the file {0:?} is empty (0 bytes): the upload was cut or the phone's copy is damaged; send it again")]
    EmptyFile(String),
    #[error("the file {0:?} is not a whole number of 16-byte blocks: it was cut short on the way; send it again")]
    Truncated(String),
    #[error("the file {0:?} does not decrypt to properly padded data: it is damaged or was not encrypted with this submission's key")]
    BadPadding(String),
    #[error("the files were encrypted in another order than the manifest lists them, so they cannot be checked; the sending app is not a compatible ODK client")]
    OutOfOrder,
    #[error("the submission's signature (base64EncryptedElementSignature) does not open with this programme's key")]
    SignatureUnreadable,
    #[error("the files do not match the submission's signature: one was changed, replaced or damaged after the phone encrypted it")]
    SignatureMismatch,
    #[error("the decrypted {0:?} is not a form instance: {1}")]
    InnerXml(String, String),
    #[error("the decrypted form's instanceID is not the one in the manifest: the form inside was swapped; refused")]
    InstanceIdMismatch,
}

/// The manifest of an encrypted submission, parsed, nothing decrypted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub form_id: String,
    pub version: Option<String>,
    /// As the phone wrote it, with its `uuid:` prefix.
    pub instance_id: String,
    /// The `base64EncryptedKey` text (it is signed as written).
    encrypted_key_b64: String,
    encrypted_key: Vec<u8>,
    /// Media file names in manifest order (IV order), each ending `.enc`.
    pub media: Vec<String>,
    /// The encrypted instance, usually `submission.xml.enc`; always last.
    pub xml_file: String,
    signature: Vec<u8>,
}

/// A decrypted file, named without its `.enc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A decrypted submission: the form instance and its media in manifest
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub xml: PlainFile,
    pub media: Vec<PlainFile>,
}

/// What a phone uploads: the manifest (the `xml_submission_file` part) and
/// one part per encrypted file, named as in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub manifest: String,
    pub files: Vec<PlainFile>,
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// IV number `index` (0-based; media in manifest order, the instance last):
/// seed = MD5(instanceID ‖ K), then byte `k mod 16` of the seed is raised by
/// one for every file k up to and including `index`.
pub fn iv(instance_id: &str, key: &[u8], index: usize) -> [u8; BLOCK] {
    let mut seed = md5(&[instance_id.as_bytes(), key]);
    for k in 0..=index {
        seed[k % BLOCK] = seed[k % BLOCK].wrapping_add(1);
    }
    seed
}

/// AES-256-CFB128 over PKCS#7-padded bytes (Java's `AES/CFB/PKCS5Padding`).
pub fn encrypt_file(key: &[u8; KEY_BYTES], iv: [u8; BLOCK], plain: &[u8]) -> Vec<u8> {
    let pad = BLOCK - plain.len() % BLOCK;
    let mut buffer = Vec::with_capacity(plain.len() + pad);
    buffer.extend_from_slice(plain);
    buffer.resize(plain.len() + pad, pad as u8);
    let cipher = EncryptingKey::cfb128(UnboundCipherKey::new(&AES_256, key).expect("32 bytes"))
        .expect("AES-256 has a CFB128 mode");
    cipher
        .less_safe_encrypt(&mut buffer, EncryptionContext::Iv128(FixedLength::from(iv)))
        .expect("CFB encrypts any length");
    buffer
}

/// The padded plaintext, or `None` when the padding is not PKCS#7 (1–16
/// bytes, all equal to their count).
fn decrypt_file(cipher: &DecryptingKey, iv: [u8; BLOCK], encrypted: &[u8]) -> Option<Vec<u8>> {
    let mut buffer = encrypted.to_vec();
    let plain_len = cipher
        .decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv)))
        .ok()?
        .len();
    buffer.truncate(plain_len);
    let pad = *buffer.last()? as usize;
    if !(1..=BLOCK).contains(&pad) || pad > buffer.len() {
        return None;
    }
    if !buffer[buffer.len() - pad..]
        .iter()
        .all(|&b| b as usize == pad)
    {
        return None;
    }
    buffer.truncate(buffer.len() - pad);
    Some(buffer)
}

/// The lines the element signature covers, each ending in `\n`.
fn signature_source(manifest: &Manifest, file_md5s: &[(&str, [u8; 16])]) -> Vec<u8> {
    let mut lines = vec![manifest.form_id.clone()];
    lines.extend(manifest.version.clone());
    lines.push(manifest.encrypted_key_b64.clone());
    lines.push(manifest.instance_id.clone());
    for (name, digest) in file_md5s {
        lines.push(format!("{name}::{}", hex::encode(digest)));
    }
    let mut source = lines.join("\n").into_bytes();
    source.push(b'\n');
    source
}

fn oaep_wrap(public: &PublicEncryptingKey, plain: &[u8]) -> Vec<u8> {
    let oaep = OaepPublicEncryptingKey::new(public.clone()).expect("an RSA public key");
    let mut out = vec![0u8; oaep.ciphertext_size()];
    oaep.encrypt(&OAEP_SHA256_MGF1SHA256, plain, &mut out, None)
        .expect("16 or 32 bytes fit any RSA key")
        .to_vec()
}

fn oaep_unwrap(oaep: &OaepPrivateDecryptingKey, wrapped: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; oaep.min_output_size()];
    oaep.decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut out, None)
        .ok()
        .map(|key| key.to_vec())
}

/// The name of a decrypted file: the manifest's name without `.enc`.
fn plain_name(encrypted_name: &str) -> &str {
    encrypted_name
        .strip_suffix(".enc")
        .unwrap_or(encrypted_name)
}

fn check_file_name(name: &str) -> Result<(), OdkError> {
    let base = name.strip_suffix(".enc").unwrap_or("");
    let bad = base.is_empty()
        || name.len() > MAX_FILE_NAME
        || base == "."
        || base == ".."
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\');
    if bad {
        return Err(OdkError::BadFileName(name.chars().take(80).collect()));
    }
    Ok(())
}

/// Reads the manifest Collect sends as `xml_submission_file`. Elements are
/// matched by local name, in any order; unknown ones are skipped.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, OdkError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(OdkError::ManifestTooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| OdkError::ManifestXml {
        position: e.valid_up_to() as u64,
        reason: "not UTF-8".into(),
    })?;
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = true;

    let mut form_id = None;
    let mut version = None;
    let mut encrypted = false;
    let mut key = None;
    let mut instance_id = None;
    let mut media = Vec::new();
    let mut xml_file = None;
    let mut signature = None;

    let mut path: Vec<String> = Vec::new();
    let mut text_buf = String::new();
    let xml_error = |reader: &Reader<&[u8]>, reason: String| OdkError::ManifestXml {
        position: reader.error_position(),
        reason,
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| xml_error(&reader, e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(OdkError::ManifestDoctype),
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    if name != "data" || form_id.is_some() {
                        return Err(OdkError::NotEncrypted);
                    }
                    for attribute in start.attributes() {
                        let attribute = attribute.map_err(|e| xml_error(&reader, e.to_string()))?;
                        let value = attribute
                            .unescape_value()
                            .map_err(|e| xml_error(&reader, e.to_string()))?
                            .into_owned();
                        match attribute.key.local_name().as_ref() {
                            b"id" => form_id = Some(value),
                            b"version" if !value.is_empty() => version = Some(value),
                            b"encrypted" => encrypted = value == "yes",
                            _ => {}
                        }
                    }
                    if !encrypted {
                        return Err(OdkError::NotEncrypted);
                    }
                    if form_id.as_deref().is_none_or(str::is_empty) {
                        return Err(OdkError::ManifestMissing("data id=\"…\""));
                    }
                }
                path.push(name);
                if path.len() > MAX_DEPTH {
                    return Err(xml_error(&reader, "elements nested too deep".into()));
                }
                text_buf.clear();
            }
            Event::Text(t) => text_buf.push_str(
                &t.xml_content()
                    .map_err(|e| xml_error(&reader, e.to_string()))?,
            ),
            Event::CData(c) => {
                text_buf.push_str(&c.decode().map_err(|e| xml_error(&reader, e.to_string()))?)
            }
            Event::GeneralRef(r) => {
                let resolved: Cow<str> = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string().into(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| xml_error(&reader, e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or(OdkError::ManifestDoctype)?
                            .into()
                    }
                    Err(e) => return Err(xml_error(&reader, e.to_string())),
                };
                text_buf.push_str(&resolved);
            }
            Event::End(_) => {
                let value = std::mem::take(&mut text_buf).trim().to_string();
                let at: Vec<&str> = path.iter().map(String::as_str).collect();
                match at[..] {
                    ["data", "base64EncryptedKey"] => {
                        set_once(&mut key, value, "base64EncryptedKey")?
                    }
                    ["data", "meta", "instanceID"] => {
                        set_once(&mut instance_id, value, "instanceID")?
                    }
                    ["data", "media", "file"] => {
                        check_file_name(&value)?;
                        if media.len() == MAX_MEDIA_FILES {
                            return Err(OdkError::TooManyFiles);
                        }
                        media.push(value);
                    }
                    ["data", "encryptedXmlFile"] => {
                        set_once(&mut xml_file, value, "encryptedXmlFile")?
                    }
                    ["data", "base64EncryptedElementSignature"] => {
                        set_once(&mut signature, value, "base64EncryptedElementSignature")?
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            // The XML declaration, comments and processing instructions.
            _ => {}
        }
    }
    if form_id.is_none() {
        return Err(OdkError::NotEncrypted);
    }
    let key_b64 = key.ok_or(OdkError::ManifestMissing("base64EncryptedKey"))?;
    let instance_id = instance_id
        .filter(|id| !id.is_empty())
        .ok_or(OdkError::ManifestMissing("meta/instanceID"))?;
    let xml_file = xml_file.ok_or(OdkError::ManifestMissing("encryptedXmlFile"))?;
    check_file_name(&xml_file)?;
    let signature =
        signature.ok_or(OdkError::ManifestMissing("base64EncryptedElementSignature"))?;
    let mut names: Vec<&str> = media.iter().map(String::as_str).collect();
    names.push(&xml_file);
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(OdkError::RepeatedFileName(pair[0].to_string()));
    }
    Ok(Manifest {
        form_id: form_id.expect("checked above"),
        version,
        instance_id,
        encrypted_key: decode_b64(&key_b64, "base64EncryptedKey")?,
        encrypted_key_b64: key_b64,
        media,
        xml_file,
        signature: decode_b64(&signature, "base64EncryptedElementSignature")?,
    })
}

fn set_once(slot: &mut Option<String>, value: String, what: &'static str) -> Result<(), OdkError> {
    if slot.replace(value).is_some() {
        return Err(OdkError::ManifestRepeated(what));
    }
    Ok(())
}

fn decode_b64(text: &str, what: &'static str) -> Result<Vec<u8>, OdkError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match STANDARD.decode(compact) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(OdkError::ManifestBase64(what)),
    }
}

impl Manifest {
    /// The manifest's files in IV order: media as listed, the instance last.
    fn files_in_order(&self) -> impl Iterator<Item = &str> {
        self.media
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.xml_file.as_str()))
    }

    /// Opens the submission with the programme's private key. `files` are
    /// the uploaded parts by name (as the manifest names them, `.enc`
    /// included), in any order; each named file must be there, and no other.
    pub fn decrypt(
        &self,
        private: &PrivateDecryptingKey,
        files: &[(&str, &[u8])],
    ) -> Result<Decrypted, OdkError> {
        let oaep =
            OaepPrivateDecryptingKey::new(private.clone()).map_err(|_| OdkError::WrongKey)?;
        let key = match oaep_unwrap(&oaep, &self.encrypted_key) {
            Some(key) => key,
            None if mgf1_sha1::unwraps(private, &self.encrypted_key) => {
                return Err(OdkError::Mgf1Sha1Wrap)
            }
            None => return Err(OdkError::WrongKey),
        };
        let key: [u8; KEY_BYTES] = key
            .as_slice()
            .try_into()
            .map_err(|_| OdkError::KeyLength(key.len()))?;

        if let Some((extra, _)) = files
            .iter()
            .find(|(name, _)| !self.files_in_order().any(|n| n == *name))
        {
            return Err(OdkError::UnexpectedFile(extra.chars().take(80).collect()));
        }
        let mut encrypted = Vec::with_capacity(self.media.len() + 1);
        for name in self.files_in_order() {
            let (_, bytes) = files
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| OdkError::MissingFile(name.to_string()))?;
            if bytes.is_empty() {
                return Err(OdkError::EmptyFile(name.to_string()));
            }
            if bytes.len() % BLOCK != 0 {
                return Err(OdkError::Truncated(name.to_string()));
            }
            encrypted.push((name, *bytes));
        }

        let cipher =
            DecryptingKey::cfb128(UnboundCipherKey::new(&AES_256, &key).expect("32 bytes"))
                .expect("AES-256 has a CFB128 mode");
        let signed_md5 = oaep_unwrap(&oaep, &self.signature);
        let mut plain = Vec::with_capacity(encrypted.len());
        for (index, (name, bytes)) in encrypted.iter().enumerate() {
            let iv = iv(&self.instance_id, &key, index);
            match decrypt_file(&cipher, iv, bytes) {
                Some(bytes) => plain.push(PlainFile {
                    name: plain_name(name).to_string(),
                    bytes,
                }),
                None => {
                    if self.another_order_fits(&cipher, &key, &encrypted, signed_md5.as_deref()) {
                        return Err(OdkError::OutOfOrder);
                    }
                    return Err(OdkError::BadPadding(name.to_string()));
                }
            }
        }

        let signed_md5 = signed_md5.ok_or(OdkError::SignatureUnreadable)?;
        let md5s: Vec<(&str, [u8; 16])> = plain
            .iter()
            .map(|f| (f.name.as_str(), md5(&[&f.bytes])))
            .collect();
        if md5(&[&signature_source(self, &md5s)]).as_slice() != signed_md5.as_slice() {
            if self.another_order_fits(&cipher, &key, &encrypted, Some(&signed_md5)) {
                return Err(OdkError::OutOfOrder);
            }
            return Err(OdkError::SignatureMismatch);
        }

        let xml = plain.pop().expect("the instance is always there");
        let inner =
            inner_instance_id(&xml.bytes).map_err(|e| OdkError::InnerXml(xml.name.clone(), e))?;
        if inner != self.instance_id {
            return Err(OdkError::InstanceIdMismatch);
        }
        Ok(Decrypted { xml, media: plain })
    }

    /// Whether the files decrypt, pad and match the signature under some
    /// other order of the IVs: then the phone encrypted them in another
    /// order than its manifest lists. Tried only for a few small files.
    fn another_order_fits(
        &self,
        cipher: &DecryptingKey,
        key: &[u8; KEY_BYTES],
        encrypted: &[(&str, &[u8])],
        signed_md5: Option<&[u8]>,
    ) -> bool {
        let Some(signed_md5) = signed_md5 else {
            return false;
        };
        let n = encrypted.len();
        let total: usize = encrypted.iter().map(|(_, b)| b.len()).sum();
        if !(2..=MAX_FILES_TO_REORDER).contains(&n) || total > MAX_BYTES_TO_REORDER {
            return false;
        }
        // md5s[file][iv]: the file's MD5 when decrypted under that IV.
        let md5s: Vec<Vec<Option<[u8; 16]>>> = encrypted
            .iter()
            .map(|(_, bytes)| {
                (0..n)
                    .map(|i| decrypt_file(cipher, iv(&self.instance_id, key, i), bytes))
                    .map(|plain| plain.map(|p| md5(&[&p])))
                    .collect()
            })
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        permutations(&mut order, 0, &mut |order| {
            if order.iter().enumerate().all(|(file, &i)| file == i) {
                return false;
            }
            // The phone signs its files in the order it encrypted them.
            let mut by_iv: Vec<Option<(&str, [u8; 16])>> = vec![None; n];
            for (file, &i) in order.iter().enumerate() {
                by_iv[i] = md5s[file][i].map(|d| (plain_name(encrypted[file].0), d));
            }
            let Some(digests) = by_iv.into_iter().collect::<Option<Vec<_>>>() else {
                return false;
            };
            md5(&[&signature_source(self, &digests)]).as_slice() == signed_md5
        })
    }
}

/// Calls `found` on each permutation of `items[start..]` until it says yes.
fn permutations(
    items: &mut [usize],
    start: usize,
    found: &mut dyn FnMut(&[usize]) -> bool,
) -> bool {
    if start == items.len() {
        return found(items);
    }
    for i in start..items.len() {
        items.swap(start, i);
        if permutations(items, start + 1, found) {
            return true;
        }
        items.swap(start, i);
    }
    false
}

/// The instance's `meta/instanceID` (either namespace, by local name).
fn inner_instance_id(xml: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(xml).map_err(|_| "it is not UTF-8".to_string())?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut id = String::new();
    loop {
        match reader.read_event() {
            // Only where: the parser's words may quote the form's content.
            Err(_) => {
                return Err(format!(
                    "not well-formed XML at byte {}",
                    reader.error_position()
                ))
            }
            Ok(Event::DocType(_)) => return Err("it declares a DOCTYPE".into()),
            Ok(Event::Start(e)) => {
                path.push(e.local_name().as_ref().to_vec());
                if path.len() > 64 {
                    return Err("elements nested too deep".into());
                }
            }
            Ok(Event::Text(t)) if is_instance_id(&path) => {
                let text = t.xml_content().map_err(|_| "its instanceID is not text")?;
                id.push_str(&text);
            }
            Ok(Event::End(_)) => {
                if is_instance_id(&path) {
                    return Ok(id.trim().to_string());
                }
                path.pop();
            }
            Ok(Event::Eof) => return Err("it has no meta/instanceID".into()),
            Ok(_) => {}
        }
    }
}

fn is_instance_id(path: &[Vec<u8>]) -> bool {
    path.len() >= 2 && path[path.len() - 1] == b"instanceID" && path[path.len() - 2] == b"meta"
}

/// Encrypts a submission as ODK Collect does, for one programme key: the
/// collector, tests and the benchmark. `media` are (name, bytes) in the
/// order they go into the manifest; the instance is `submission.xml`.
pub fn encrypt(
    public: &PublicEncryptingKey,
    form_id: &str,
    version: Option<&str>,
    instance_id: &str,
    xml: &[u8],
    media: &[(&str, &[u8])],
) -> Encrypted {
    let mut key = [0u8; KEY_BYTES];
    SystemRandom::new().fill(&mut key).expect("random");
    let wrapped = STANDARD.encode(oaep_wrap(public, &key));
    encrypt_with(
        public,
        &key,
        &wrapped,
        form_id,
        version,
        instance_id,
        xml,
        media,
    )
}

/// [`encrypt`] with a given K and wrapped K (tests build bad inputs with it).
#[allow(clippy::too_many_arguments)]
#[doc(hidden)]
pub fn encrypt_with(
    public: &PublicEncryptingKey,
    key: &[u8; KEY_BYTES],
    wrapped_key_b64: &str,
    form_id: &str,
    version: Option<&str>,
    instance_id: &str,
    xml: &[u8],
    media: &[(&str, &[u8])],
) -> Encrypted {
    let all: Vec<(&str, &[u8])> = media
        .iter()
        .copied()
        .chain(std::iter::once(("submission.xml", xml)))
        .collect();
    let files: Vec<PlainFile> = all
        .iter()
        .enumerate()
        .map(|(index, (name, plain))| PlainFile {
            name: format!("{name}.enc"),
            bytes: encrypt_file(key, iv(instance_id, key, index), plain),
        })
        .collect();
    let manifest_fields = Manifest {
        form_id: form_id.to_string(),
        version: version.map(str::to_string),
        instance_id: instance_id.to_string(),
        encrypted_key_b64: wrapped_key_b64.to_string(),
        encrypted_key: Vec::new(),
        media: Vec::new(),
        xml_file: String::new(),
        signature: Vec::new(),
    };
    let md5s: Vec<(&str, [u8; 16])> = all
        .iter()
        .map(|(name, plain)| (*name, md5(&[plain])))
        .collect();
    let signature = oaep_wrap(public, &md5(&[&signature_source(&manifest_fields, &md5s)]));
    Encrypted {
        manifest: manifest_xml(
            form_id,
            version,
            instance_id,
            wrapped_key_b64,
            media.iter().map(|(name, _)| *name),
            &STANDARD.encode(signature),
        ),
        files,
    }
}

/// The manifest as Collect writes it (namespace, element order).
#[doc(hidden)]
pub fn manifest_xml<'a>(
    form_id: &str,
    version: Option<&str>,
    instance_id: &str,
    wrapped_key_b64: &str,
    media: impl Iterator<Item = &'a str>,
    signature_b64: &str,
) -> String {
    use quick_xml::escape::escape;
    let version = version
        .map(|v| format!(" version=\"{}\"", escape(v)))
        .unwrap_or_default();
    let media: String = media
        .map(|name| format!("<media><file>{}.enc</file></media>", escape(name)))
        .collect();
    format!(
        "<data xmlns=\"{COLLECT_NAMESPACE}\" id=\"{}\"{version} encrypted=\"yes\">\
         <base64EncryptedKey>{wrapped_key_b64}</base64EncryptedKey>\
         <orx:meta xmlns:orx=\"http://openrosa.org/xforms\"><orx:instanceID>{}</orx:instanceID></orx:meta>\
         {media}<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>\
         <base64EncryptedElementSignature>{signature_b64}</base64EncryptedElementSignature></data>",
        escape(form_id),
        escape(instance_id),
    )
}

/// The OAEP-wrapped K, base64, as a phone writes it.
#[doc(hidden)]
pub fn wrap_key(public: &PublicEncryptingKey, key: &[u8]) -> String {
    STANDARD.encode(oaep_wrap(public, key))
}

/// The public key as a form's `base64RsaPublicKey`: base64 (no line breaks)
/// of the DER SubjectPublicKeyInfo, which Collect reads with
/// `X509EncodedKeySpec`.
pub fn form_public_key(public: &PublicEncryptingKey) -> String {
    STANDARD.encode(public.as_der().expect("an RSA public key encodes").as_ref())
}

/// RSA-OAEP with SHA-256 and MGF1-SHA-1 (the JCE's reading of
/// `OAEPWithSHA-256AndMGF1Padding`), which aws-lc-rs does not offer: only
/// to tell that mistake from a wrong key, and to build it in tests.
#[doc(hidden)]
pub mod mgf1_sha1 {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{PrivateDecryptingKey, PublicEncryptingKey};
    use aws_lc_sys as ffi;

    /// An EVP_PKEY_CTX for OAEP SHA-256/MGF1-SHA-1 on a DER key, freed on drop.
    struct Context {
        pkey: *mut ffi::EVP_PKEY,
        ctx: *mut ffi::EVP_PKEY_CTX,
    }

    impl Drop for Context {
        fn drop(&mut self) {
            // SAFETY: both were made by aws-lc below and are freed once.
            unsafe {
                if !self.ctx.is_null() {
                    ffi::EVP_PKEY_CTX_free(self.ctx);
                }
                if !self.pkey.is_null() {
                    ffi::EVP_PKEY_free(self.pkey);
                }
            }
        }
    }

    fn context(der: &[u8], private: bool) -> Option<Context> {
        // SAFETY: CBS reads `der` only during the parse; every pointer is
        // checked for null and owned by `Context`, which frees it.
        unsafe {
            let mut cbs = std::mem::zeroed::<ffi::CBS>();
            ffi::CBS_init(&mut cbs, der.as_ptr(), der.len());
            let pkey = if private {
                ffi::EVP_parse_private_key(&mut cbs)
            } else {
                ffi::EVP_parse_public_key(&mut cbs)
            };
            let mut context = Context {
                pkey,
                ctx: std::ptr::null_mut(),
            };
            if pkey.is_null() {
                return None;
            }
            context.ctx = ffi::EVP_PKEY_CTX_new(pkey, std::ptr::null_mut());
            if context.ctx.is_null() {
                return None;
            }
            let init = if private {
                ffi::EVP_PKEY_decrypt_init(context.ctx)
            } else {
                ffi::EVP_PKEY_encrypt_init(context.ctx)
            };
            let ok = init == 1
                && ffi::EVP_PKEY_CTX_set_rsa_padding(context.ctx, ffi::RSA_PKCS1_OAEP_PADDING) == 1
                && ffi::EVP_PKEY_CTX_set_rsa_oaep_md(context.ctx, ffi::EVP_sha256()) == 1
                && ffi::EVP_PKEY_CTX_set_rsa_mgf1_md(context.ctx, ffi::EVP_sha1()) == 1;
            ok.then_some(context)
        }
    }

    /// Whether `wrapped` opens as OAEP SHA-256/MGF1-SHA-1 with this key.
    pub fn unwraps(private: &PrivateDecryptingKey, wrapped: &[u8]) -> bool {
        let Ok(der) = private.as_der() else {
            return false;
        };
        let Some(context) = context(der.as_ref(), true) else {
            return false;
        };
        let mut out = vec![0u8; private.key_size_bytes()];
        let mut out_len = out.len();
        // SAFETY: `out` holds `out_len` bytes; aws-lc writes at most that.
        unsafe {
            ffi::EVP_PKEY_decrypt(
                context.ctx,
                out.as_mut_ptr(),
                &mut out_len,
                wrapped.as_ptr(),
                wrapped.len(),
            ) == 1
        }
    }

    /// Wraps `plain` with OAEP SHA-256/MGF1-SHA-1 (tests only).
    pub fn wrap(public: &PublicEncryptingKey, plain: &[u8]) -> Vec<u8> {
        let der = public.as_der().expect("an RSA public key encodes");
        let context = context(der.as_ref(), false).expect("an OAEP context");
        let mut out = vec![0u8; public.key_size_bytes()];
        let mut out_len = out.len();
        // SAFETY: `out` holds `out_len` bytes; aws-lc writes at most that.
        let ok = unsafe {
            ffi::EVP_PKEY_encrypt(
                context.ctx,
                out.as_mut_ptr(),
                &mut out_len,
                plain.as_ptr(),
                plain.len(),
            )
        };
        assert_eq!(ok, 1, "OAEP MGF1-SHA-1 wrap");
        out.truncate(out_len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_key() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    const VECTOR_ID: &str = "uuid:00000000-0000-4000-8000-000000000000";

    /// docs/odk.md / the brief's §4 vector, checked with Node and OpenSSL.
    #[test]
    fn the_brief_vector() {
        let key = vector_key();
        let iv0 = iv(VECTOR_ID, &key, 0);
        let iv1 = iv(VECTOR_ID, &key, 1);
        assert_eq!(hex::encode(iv0), "af3b7ab17ea49c63dafdc084f446e4f6");
        assert_eq!(hex::encode(iv1), "af3c7ab17ea49c63dafdc084f446e4f6");
        assert_eq!(
            hex::encode(encrypt_file(&key, iv0, b"hello media file")),
            "f76658be31fa61b7f26b608b02b8119a834a892fda00850d9af272ebcfa25c6f"
        );
        assert_eq!(
            hex::encode(encrypt_file(&key, iv1, b"<data id=\"x\"><a>1</a></data>")),
            "a60cfbfc343716e7b3e8e7fc716ea2cf9a5e5d2b8a85b3b608a520afb22de64c"
        );
        let cipher = DecryptingKey::cfb128(UnboundCipherKey::new(&AES_256, &key).unwrap()).unwrap();
        let back = decrypt_file(
            &cipher,
            iv1,
            &hex::decode("a60cfbfc343716e7b3e8e7fc716ea2cf9a5e5d2b8a85b3b608a520afb22de64c")
                .unwrap(),
        );
        assert_eq!(
            back.as_deref(),
            Some(&b"<data id=\"x\"><a>1</a></data>"[..])
        );
    }

    #[test]
    fn padding_is_checked_byte_by_byte() {
        let key = vector_key();
        let cipher = DecryptingKey::cfb128(UnboundCipherKey::new(&AES_256, &key).unwrap()).unwrap();
        let iv0 = iv(VECTOR_ID, &key, 0);
        // Exactly one block of plaintext gets a whole block of padding.
        let one_block = encrypt_file(&key, iv0, &[7u8; 16]);
        assert_eq!(one_block.len(), 32);
        assert_eq!(decrypt_file(&cipher, iv0, &one_block), Some(vec![7u8; 16]));
        // Plaintext whose "padding" is 0, 17, or unequal bytes: refused.
        for tail in [vec![0u8], vec![17u8], vec![1, 2, 2, 3]] {
            let mut padded = vec![b'a'; 16 - tail.len()];
            padded.extend(tail);
            let mut raw = padded.clone();
            EncryptingKey::cfb128(UnboundCipherKey::new(&AES_256, &key).unwrap())
                .unwrap()
                .less_safe_encrypt(&mut raw, EncryptionContext::Iv128(FixedLength::from(iv0)))
                .unwrap();
            assert_eq!(decrypt_file(&cipher, iv0, &raw), None, "{padded:?}");
        }
    }

    #[test]
    fn manifests_in_either_namespace_and_any_order() {
        let spec = format!(
            "<?xml version='1.0'?><data xmlns=\"{SPEC_NAMESPACE}\" encrypted=\"yes\" id=\"kz.referral\">\
             <encryptedXmlFile>submission.xml.enc</encryptedXmlFile>\
             <base64EncryptedElementSignature>AAAA</base64EncryptedElementSignature>\
             <media><file>b.jpg.enc</file></media>\
             <n0:meta xmlns:n0=\"http://openrosa.org/xforms\"><n0:instanceID>uuid:1</n0:instanceID></n0:meta>\
             <media><file>a&amp;b.jpg.enc</file></media>\
             <base64EncryptedKey>\n AAAA\n</base64EncryptedKey></data>"
        );
        let m = parse_manifest(spec.as_bytes()).unwrap();
        assert_eq!(m.form_id, "kz.referral");
        assert_eq!(m.version, None);
        assert_eq!(m.instance_id, "uuid:1");
        assert_eq!(m.media, ["b.jpg.enc", "a&b.jpg.enc"]);
        assert_eq!(m.xml_file, "submission.xml.enc");
    }

    #[test]
    fn manifest_limits() {
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(parse_manifest(&big), Err(OdkError::ManifestTooLarge));
        let doctype =
            b"<!DOCTYPE data [<!ENTITY x \"y\">]><data encrypted=\"yes\" id=\"f\">&x;</data>";
        assert_eq!(parse_manifest(doctype), Err(OdkError::ManifestDoctype));
        let entity =
            b"<data encrypted=\"yes\" id=\"f\"><base64EncryptedKey>&x;</base64EncryptedKey></data>";
        assert_eq!(parse_manifest(entity), Err(OdkError::ManifestDoctype));
        let plain = b"<data id=\"f\"><meta><instanceID>uuid:1</instanceID></meta></data>";
        assert_eq!(parse_manifest(plain), Err(OdkError::NotEncrypted));
        let traversal =
            b"<data encrypted=\"yes\" id=\"f\"><media><file>../x.enc</file></media></data>";
        assert!(matches!(
            parse_manifest(traversal),
            Err(OdkError::BadFileName(_))
        ));
        let broken = b"<data encrypted=\"yes\" id=\"f\"><media></data>";
        assert!(matches!(
            parse_manifest(broken),
            Err(OdkError::ManifestXml { .. })
        ));
        let missing = b"<data encrypted=\"yes\" id=\"f\"></data>";
        assert_eq!(
            parse_manifest(missing),
            Err(OdkError::ManifestMissing("base64EncryptedKey"))
        );
    }
}
