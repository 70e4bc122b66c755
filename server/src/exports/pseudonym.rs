//! Pseudonyms of a de-identified export: a case (and a submission) is
//! named by HMAC-SHA256 of its id under a key drawn at random for this
//! export and never kept. The same case has the same pseudonym in every
//! row and every file of one export (the .zip's repeat files join on it),
//! and another in the next export, so two exports cannot be linked by it
//! and nobody — the server included — can turn it back into a case.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;

use crate::error::{AppError, AppResult};

/// What a pseudonym names: the same id gives different pseudonyms as a
/// case and as a submission.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Case,
    Submission,
}

/// The per-export key. `Debug` shows no key.
#[derive(Clone)]
pub struct Pseudonyms {
    key: hmac::Key,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(per-export key)")
    }
}

/// Hex digits of a pseudonym: 64 bits, so a million cases in one export
/// collide with a chance of about one in thirty million.
const LEN: usize = 16;

impl Pseudonyms {
    /// A fresh random key for one export.
    pub fn new() -> AppResult<Pseudonyms> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| AppError::internal("export: no random key for pseudonyms"))?;
        Ok(Pseudonyms { key })
    }

    /// Appends the pseudonym of `id` (16 lowercase hex digits) to `out`;
    /// nothing for an empty id.
    pub fn push(&self, out: &mut Vec<u8>, kind: Kind, id: &str) {
        if id.is_empty() {
            return;
        }
        let mut context = hmac::Context::with_key(&self.key);
        context.update(match kind {
            Kind::Case => b"case\0",
            Kind::Submission => b"subm\0",
        });
        context.update(id.as_bytes());
        let tag = context.sign();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in &tag.as_ref()[..LEN / 2] {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }

    /// The pseudonym of `id` as text.
    pub fn of(&self, kind: Kind, id: &str) -> String {
        let mut out = Vec::with_capacity(LEN);
        self.push(&mut out, kind, id);
        String::from_utf8(out).expect("hex is ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_within_an_export_and_differ_across_exports() {
        let one = Pseudonyms::new().unwrap();
        let other = Pseudonyms::new().unwrap();
        let id = "4f0c8e0a-7c61-4b8e-9a51-0d3c2a9b6e11";
        let p = one.of(Kind::Case, id);
        assert_eq!(p.len(), 16);
        assert!(p.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(p, one.of(Kind::Case, id));
        assert_ne!(p, one.of(Kind::Submission, id));
        assert_ne!(p, one.of(Kind::Case, "another case"));
        assert_ne!(p, other.of(Kind::Case, id));
        assert_eq!(one.of(Kind::Case, ""), "");
        assert!(!format!("{one:?}").contains(&p));
    }
}
