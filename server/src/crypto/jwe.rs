//! JWE compact serialization (RFC 7516) in the one profile phones use:
//! `alg` RSA-OAEP-256, `enc` A256GCM, `kid` naming a programme key.
//! Everything else is refused.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

pub const ALG: &str = "RSA-OAEP-256";
pub const ENC: &str = "A256GCM";

/// Why a JWE was refused. Callers say no more than the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    #[error("not a JWE in compact serialization")]
    Malformed,
    #[error(
        "unsupported JWE header: only alg RSA-OAEP-256 with enc A256GCM and a kid are accepted"
    )]
    Unsupported,
    #[error("the key id is not one of this server's keys")]
    UnknownKey,
    #[error("the content could not be decrypted")]
    Undecryptable,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    enc: String,
    kid: Option<String>,
    zip: Option<String>,
    crit: Option<serde_json::Value>,
}

/// A parsed, not yet decrypted JWE.
#[derive(Debug)]
pub struct Jwe<'a> {
    pub kid: String,
    protected_b64: &'a str,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JweError::Malformed)
}

/// Splits and checks the header; cheap, before any private-key operation.
pub fn parse(compact: &str) -> Result<Jwe<'_>, JweError> {
    let compact = compact.trim();
    let parts: Vec<&str> = compact.split('.').collect();
    let [protected_b64, key, iv, ciphertext, tag] = parts[..] else {
        return Err(JweError::Malformed);
    };
    let header: Header =
        serde_json::from_slice(&b64(protected_b64)?).map_err(|_| JweError::Malformed)?;
    if header.alg != ALG || header.enc != ENC || header.zip.is_some() || header.crit.is_some() {
        return Err(JweError::Unsupported);
    }
    let kid = header
        .kid
        .filter(|k| !k.is_empty() && k.len() <= 100)
        .ok_or(JweError::Unsupported)?;
    let jwe = Jwe {
        kid,
        protected_b64,
        encrypted_key: b64(key)?,
        iv: b64(iv)?,
        ciphertext: b64(ciphertext)?,
        tag: b64(tag)?,
    };
    if jwe.iv.len() != 12 || jwe.tag.len() != 16 || jwe.encrypted_key.is_empty() {
        return Err(JweError::Malformed);
    }
    Ok(jwe)
}

impl Jwe<'_> {
    /// Unwraps the content key with RSA-OAEP-256, then opens the content with
    /// AES-256-GCM, the protected header as associated data.
    pub fn decrypt(&self, key: &PrivateDecryptingKey) -> Result<Vec<u8>, JweError> {
        let oaep =
            OaepPrivateDecryptingKey::new(key.clone()).map_err(|_| JweError::Undecryptable)?;
        let mut cek = vec![0u8; oaep.min_output_size()];
        let cek = oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, &self.encrypted_key, &mut cek, None)
            .map_err(|_| JweError::Undecryptable)?;
        if cek.len() != 32 {
            return Err(JweError::Undecryptable);
        }
        let content_key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, cek).map_err(|_| JweError::Undecryptable)?,
        );
        let nonce =
            Nonce::try_assume_unique_for_key(&self.iv).map_err(|_| JweError::Undecryptable)?;
        let mut buffer = Vec::with_capacity(self.ciphertext.len() + self.tag.len());
        buffer.extend_from_slice(&self.ciphertext);
        buffer.extend_from_slice(&self.tag);
        let plain = content_key
            .open_in_place(nonce, Aad::from(self.protected_b64.as_bytes()), &mut buffer)
            .map_err(|_| JweError::Undecryptable)?;
        Ok(plain.to_vec())
    }
}

/// Encrypts for a programme key, as a phone does (collector, tests).
pub fn encrypt(plaintext: &[u8], kid: &str, public: &PublicEncryptingKey) -> String {
    let rng = SystemRandom::new();
    let mut cek = [0u8; 32];
    let mut iv = [0u8; 12];
    rng.fill(&mut cek).expect("random");
    rng.fill(&mut iv).expect("random");
    let header =
        serde_json::json!({ "alg": ALG, "enc": ENC, "kid": kid, "cty": "application/json" });
    let protected_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
    let oaep = OaepPublicEncryptingKey::new(public.clone()).expect("an RSA public key");
    let mut wrapped = vec![0u8; oaep.ciphertext_size()];
    let wrapped = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut wrapped, None)
        .expect("a 32-byte key fits any RSA key");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &cek).expect("32 bytes"));
    let mut buffer = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(protected_b64.as_bytes()),
            &mut buffer,
        )
        .expect("sealing in memory");
    format!(
        "{protected_b64}.{}.{}.{}.{}",
        URL_SAFE_NO_PAD.encode(wrapped),
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(&buffer),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;

    fn key() -> PrivateDecryptingKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
        PrivateDecryptingKey::from_pkcs8(pair.as_der().unwrap().as_ref()).unwrap()
    }

    #[test]
    fn round_trip_and_tampering() {
        let private = key();
        let jwe = encrypt(b"{\"a\":1}", "kz-1", &private.public_key());
        let parsed = parse(&jwe).unwrap();
        assert_eq!(parsed.kid, "kz-1");
        assert_eq!(parsed.decrypt(&private).unwrap(), b"{\"a\":1}");

        // A flipped ciphertext bit, a swapped header, another key: refused.
        let mut parts: Vec<String> = jwe.split('.').map(str::to_string).collect();
        let mut ct = URL_SAFE_NO_PAD.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = URL_SAFE_NO_PAD.encode(ct);
        let tampered = parts.join(".");
        assert_eq!(
            parse(&tampered).unwrap().decrypt(&private),
            Err(JweError::Undecryptable)
        );
        assert_eq!(
            parse(&jwe).unwrap().decrypt(&key()),
            Err(JweError::Undecryptable)
        );
    }

    #[test]
    fn other_algorithms_and_shapes_are_refused() {
        let header = |h: &str| URL_SAFE_NO_PAD.encode(h);
        let rest = ".AAAA.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA";
        for h in [
            r#"{"alg":"RSA1_5","enc":"A256GCM","kid":"k"}"#,
            r#"{"alg":"dir","enc":"A256GCM","kid":"k"}"#,
            r#"{"alg":"none","enc":"A256GCM","kid":"k"}"#,
            r#"{"alg":"RSA-OAEP-256","enc":"A128CBC-HS256","kid":"k"}"#,
            r#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#,
            r#"{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"k","zip":"DEF"}"#,
        ] {
            assert_eq!(
                parse(&format!("{}{rest}", header(h))).unwrap_err(),
                JweError::Unsupported,
                "{h}"
            );
        }
        assert_eq!(parse("not.a.jwe").unwrap_err(), JweError::Malformed);
        assert_eq!(parse("").unwrap_err(), JweError::Malformed);
        assert_eq!(parse("a.b.c.d.e").unwrap_err(), JweError::Malformed);
    }
}
