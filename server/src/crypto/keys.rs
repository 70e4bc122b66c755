//! Programme key pairs: RSA (2048 by default, 3072 configurable), one
//! current per programme, older ones kept for decryption. Private keys are
//! stored sealed under the KEK. Owns the `keys` table.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PrivateDecryptingKey, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use super::kek::Kek;
use super::CryptoError;
use crate::db::schema::keys;
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::time::now;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = keys)]
struct KeyRow {
    kid: String,
    programme: String,
    bits: i32,
    public_jwk: String,
    sealed_private: String,
    current: bool,
    created_at: chrono::NaiveDateTime,
    retired_at: Option<chrono::NaiveDateTime>,
}

/// A public key as listed and as phones receive it.
#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    pub kid: String,
    pub programme: String,
    pub bits: i32,
    pub current: bool,
    #[serde(serialize_with = "crate::json::utc")]
    pub created_at: chrono::NaiveDateTime,
    pub jwk: Value,
}

impl From<KeyRow> for PublicKeyInfo {
    fn from(r: KeyRow) -> Self {
        PublicKeyInfo {
            jwk: serde_json::from_str(&r.public_jwk).unwrap_or(Value::Null),
            kid: r.kid,
            programme: r.programme,
            bits: r.bits,
            current: r.current,
            created_at: r.created_at,
        }
    }
}

fn key_size(bits: u32) -> Result<KeySize, CryptoError> {
    match bits {
        2048 => Ok(KeySize::Rsa2048),
        3072 => Ok(KeySize::Rsa3072),
        4096 => Ok(KeySize::Rsa4096),
        other => Err(CryptoError::Config(format!(
            "RSA keys are 2048, 3072 or 4096 bits, not {other}"
        ))),
    }
}

fn new_kid(programme: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{programme}-{}-{}",
        chrono::Utc::now().format("%Y%m%d"),
        &random[..8]
    )
}

/// Makes a key pair and returns the row to store (private part sealed).
fn generate(kek: &Kek, programme: &str, bits: u32) -> Result<KeyRow, CryptoError> {
    let pair = KeyPair::generate(key_size(bits)?).map_err(|_| CryptoError::KeyGeneration)?;
    let components: PublicKeyComponents<Vec<u8>> = pair.public_key().into();
    let kid = new_kid(programme);
    let jwk = json!({
        "kty": "RSA",
        "kid": kid,
        "use": "enc",
        "alg": super::jwe::ALG,
        "n": URL_SAFE_NO_PAD.encode(&components.n),
        "e": URL_SAFE_NO_PAD.encode(&components.e),
    });
    let pkcs8 = pair.as_der().map_err(|_| CryptoError::KeyGeneration)?;
    Ok(KeyRow {
        sealed_private: STANDARD.encode(kek.seal(&kid, pkcs8.as_ref())),
        kid,
        programme: programme.to_string(),
        bits: bits as i32,
        public_jwk: jwk.to_string(),
        current: true,
        created_at: now(),
        retired_at: None,
    })
}

fn current_row(conn: &mut DbConnection, programme: &str) -> AppResult<Option<KeyRow>> {
    Ok(keys::table
        .filter(keys::programme.eq(programme))
        .filter(keys::current.eq(true))
        .select(KeyRow::as_select())
        .first(conn)
        .optional()?)
}

/// Makes a new current key for the programme; earlier keys stay for
/// decrypting what phones encrypted before they synced the new one.
pub fn rotate(
    conn: &mut DbConnection,
    kek: &Kek,
    programme: &str,
    bits: u32,
) -> AppResult<PublicKeyInfo> {
    let row = generate(kek, programme, bits).map_err(AppError::internal)?;
    write_tx(conn, |conn| {
        diesel::update(
            keys::table
                .filter(keys::programme.eq(programme))
                .filter(keys::current.eq(true)),
        )
        .set((keys::current.eq(false), keys::retired_at.eq(now())))
        .execute(conn)?;
        diesel::insert_into(keys::table)
            .values(&row)
            .execute(conn)?;
        crate::changes::record_change(conn, crate::changes::ChangeKind::Key, &row.kid, None)?;
        Ok(PublicKeyInfo::from(row))
    })
}

/// Makes a key for every programme that has none yet (first start), and
/// checks that the current keys open with this KEK.
pub fn ensure_current(
    conn: &mut DbConnection,
    kek: &Kek,
    programmes: &[&str],
    bits: u32,
) -> Result<Vec<String>, CryptoError> {
    let mut created = Vec::new();
    for programme in programmes {
        match current_row(conn, programme).map_err(|e| CryptoError::Config(e.to_string()))? {
            Some(row) => {
                let sealed = STANDARD
                    .decode(&row.sealed_private)
                    .map_err(|_| CryptoError::Unseal)?;
                kek.open(&row.kid, &sealed).map_err(|_| {
                    CryptoError::Config(format!(
                        "the private key {} does not open with this key-encryption key: is data/master.key (or the passphrase) the one it was sealed with? {}",
                        row.kid,
                        super::kek::SHARED_KEYS_FIX
                    ))
                })?;
            }
            None => {
                let info = rotate(conn, kek, programme, bits)
                    .map_err(|e| CryptoError::Config(e.to_string()))?;
                created.push(info.kid);
            }
        }
    }
    Ok(created)
}

/// Re-seals every private key (current and retired) from `old` to `new`,
/// in the caller's transaction: the KEK rotation of `casesync rekey`.
pub fn reseal_all(conn: &mut DbConnection, old: &Kek, new: &Kek) -> AppResult<usize> {
    let rows: Vec<(String, String)> = keys::table
        .select((keys::kid, keys::sealed_private))
        .load(conn)?;
    for (kid, sealed) in &rows {
        let plain = STANDARD
            .decode(sealed)
            .map_err(|_| CryptoError::Unseal)
            .and_then(|s| old.open(kid, &s))
            .map_err(|_| {
                AppError::internal(format!(
                    "the private key {kid} does not open with the current key-encryption key; nothing was changed"
                ))
            })?;
        diesel::update(keys::table.find(kid))
            .set(keys::sealed_private.eq(STANDARD.encode(new.seal(kid, &plain))))
            .execute(conn)?;
    }
    Ok(rows.len())
}

/// Whether any programme key is stored (each sealed under the KEK).
pub fn any_stored(conn: &mut DbConnection) -> AppResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(keys::table.select(keys::kid))).get_result(conn)?)
}

/// Whether every stored private key opens with `kek` (true with none).
pub fn all_open_with(conn: &mut DbConnection, kek: &Kek) -> AppResult<bool> {
    let rows: Vec<(String, String)> = keys::table
        .select((keys::kid, keys::sealed_private))
        .load(conn)?;
    Ok(rows.iter().all(|(kid, sealed)| {
        STANDARD
            .decode(sealed)
            .ok()
            .is_some_and(|s| kek.open(kid, &s).is_ok())
    }))
}

pub fn current(conn: &mut DbConnection, programme: &str) -> AppResult<PublicKeyInfo> {
    current_row(conn, programme)?
        .map(PublicKeyInfo::from)
        .ok_or_else(|| AppError::NotFound(format!("programme {programme:?} has no key")))
}

/// Every key, newest first (public parts only).
/// The programme a key belongs to.
pub fn programme_of(conn: &mut DbConnection, kid: &str) -> AppResult<Option<String>> {
    Ok(keys::table
        .find(kid)
        .select(keys::programme)
        .first(conn)
        .optional()?)
}

pub fn list(conn: &mut DbConnection) -> AppResult<Vec<PublicKeyInfo>> {
    Ok(keys::table
        .select(KeyRow::as_select())
        .order((keys::programme, keys::created_at.desc()))
        .load(conn)?
        .into_iter()
        .map(PublicKeyInfo::from)
        .collect())
}

/// Unsealed private keys by kid, loaded on first use. Keys never change once
/// made, so entries never go stale.
pub struct KeyRing {
    kek: Kek,
    unsealed: RwLock<HashMap<String, (String, Arc<PrivateDecryptingKey>)>>,
}

impl KeyRing {
    pub fn new(kek: Kek) -> Self {
        KeyRing {
            kek,
            unsealed: RwLock::new(HashMap::new()),
        }
    }

    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// The private key and programme of `kid`, or `None` if there is no such key.
    pub fn get(
        &self,
        conn: &mut DbConnection,
        kid: &str,
    ) -> AppResult<Option<(String, Arc<PrivateDecryptingKey>)>> {
        if let Some(found) = self.unsealed.read().expect("key ring lock").get(kid) {
            return Ok(Some(found.clone()));
        }
        let Some(row) = keys::table
            .find(kid)
            .select(KeyRow::as_select())
            .first(conn)
            .optional()?
        else {
            return Ok(None);
        };
        let sealed = STANDARD
            .decode(&row.sealed_private)
            .map_err(|_| AppError::internal("a sealed key is not base64"))?;
        let pkcs8 = self
            .kek
            .open(&row.kid, &sealed)
            .map_err(|_| AppError::internal(format!("key {} does not unseal", row.kid)))?;
        let key = PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|_| AppError::internal(format!("key {} is not PKCS#8", row.kid)))?;
        let entry = (row.programme, Arc::new(key));
        self.unsealed
            .write()
            .expect("key ring lock")
            .insert(kid.to_string(), entry.clone());
        Ok(Some(entry))
    }
}

/// The public key of a JWK, for encrypting (collector, tests).
pub fn public_key_from_jwk(
    jwk: &Value,
) -> Result<aws_lc_rs::rsa::PublicEncryptingKey, CryptoError> {
    let part = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or_else(|| CryptoError::Config(format!("the JWK has no valid {name:?}")))
    };
    let components = PublicKeyComponents {
        n: part("n")?,
        e: part("e")?,
    };
    components
        .try_into()
        .map_err(|_| CryptoError::Config("the JWK is not a usable RSA public key".into()))
}
