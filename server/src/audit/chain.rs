//! The chain: recording rows (each hashed, or HMAC'd under the chain's
//! key, over its content and the row before it), the chain's key, and
//! sealing rows from before the chain.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use aws_lc_rs::{digest, hmac};
use chrono::{NaiveDateTime, SecondsFormat};
use diesel::connection::TransactionManager;
use diesel::prelude::*;
use serde::{Serialize, Serializer};

use crate::auth::Principal;
use crate::crypto::audit_key::{AuditKeyFile, AUDIT_KEY_FILE};
use crate::crypto::kek::{self, Kek};
use crate::db::schema::{audit_head, audit_log};
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};

/// The link of the first row: there is no row before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How `occurred_at` enters the hash: microseconds, as both dialects store.
pub(super) const HASHED_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Rows read at a time when sealing, verifying and exporting: memory stays
/// flat however long the log.
pub(super) const PAGE: i64 = 10_000;

/// Rows per page of `GET /audit`.
pub(super) const DEFAULT_LIMIT: i64 = 100;
pub(super) const MAX_LIMIT: i64 = 500;

/// Problems `verify` lists one by one; beyond this it only counts them.
pub(super) const MAX_PROBLEMS: usize = 1_000;

/// Where a request came from; attached to every audit row it causes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

/// Every column the hash covers besides the link (`prev_hash`, `seq`).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
pub(super) struct Content<'a> {
    occurred_at: NaiveDateTime,
    actor_id: Option<&'a str>,
    actor_role: Option<&'a str>,
    actor_sites: Option<&'a str>,
    action: &'a str,
    object_type: Option<&'a str>,
    object_id: Option<&'a str>,
    detail: Option<&'a str>,
    purpose: Option<&'a str>,
    request_id: Option<&'a str>,
    client_ip: Option<&'a str>,
    /// Who made the device token the actor used, when that was how the
    /// request was signed in: the token acts with their say-so.
    token_created_by: Option<&'a str>,
}

impl Content<'_> {
    /// SHA-256 (hex) of a JSON array of the link and every field, so no
    /// two different rows encode alike (a field cannot spill into the next);
    /// with the chain's key, HMAC-SHA256 of the same. The token's maker is
    /// appended only when set, so rows written before it existed hash as
    /// they did.
    pub(super) fn hash(&self, prev_hash: &str, seq: i64, key: Option<&ChainKey>) -> String {
        let mut fields = serde_json::to_value((
            prev_hash,
            seq,
            self.occurred_at.format(HASHED_TIME).to_string(),
            self.actor_id,
            self.actor_role,
            self.actor_sites,
            self.action,
            self.object_type,
            self.object_id,
            self.detail,
            self.purpose,
            self.request_id,
            self.client_ip,
        ))
        .expect("strings and numbers serialise");
        if let (Some(creator), Some(list)) = (self.token_created_by, fields.as_array_mut()) {
            list.push(creator.into());
        }
        let encoded = serde_json::to_vec(&fields).expect("a JSON value serialises");
        match key {
            Some(key) => hex::encode(hmac::sign(&key.key, &encoded)),
            None => hex::encode(digest::digest(&digest::SHA256, &encoded)),
        }
    }
}

/// The chain's key, as opened from `data/audit.key`.
#[derive(Clone)]
pub struct ChainKey {
    pub chain_id: String,
    /// The first keyed position; rows before it are plain SHA-256.
    pub keyed_from: i64,
    key: hmac::Key,
    /// A fingerprint of the key (not the key), kept in `audit_head`.
    pub key_id: String,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("chain_id", &self.chain_id)
            .field("keyed_from", &self.keyed_from)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    pub fn new(file: &AuditKeyFile) -> ChainKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &file.key);
        let id = hmac::sign(&key, b"casesync audit key id");
        ChainKey {
            chain_id: file.chain_id.clone(),
            keyed_from: file.keyed_from,
            key,
            key_id: hex::encode(&id.as_ref()[..8]),
        }
    }

    /// The key for a row at this position: none before the keying point.
    pub(super) fn for_seq(&self, seq: i64) -> Option<&ChainKey> {
        (seq >= self.keyed_from).then_some(self)
    }
}

/// The chain keys this process has opened, by chain id: `record` finds the
/// key of the database it writes to from the head it locks, so callers
/// need nothing but a connection. Several databases (tests) coexist.
pub(super) static CHAIN_KEYS: LazyLock<RwLock<HashMap<String, ChainKey>>> =
    LazyLock::new(Default::default);

pub(super) fn registered(chain_id: &str) -> Option<ChainKey> {
    CHAIN_KEYS
        .read()
        .expect("chain key registry not poisoned")
        .get(chain_id)
        .cloned()
}

/// Why a server may not write to a keyed chain, in words an operator can act on.
pub(super) fn key_refusal(message: String) -> AppError {
    AppError::internal(message)
}

/// The head's keying columns.
#[derive(Debug, Clone, Queryable)]
pub(super) struct HeadKeying {
    pub(super) seq: i64,
    pub(super) chain_id: Option<String>,
    pub(super) keyed_from: Option<i64>,
    pub(super) key_id: Option<String>,
}

pub(super) fn head_keying(conn: &mut DbConnection) -> AppResult<HeadKeying> {
    audit_head::table
        .find(1)
        .select((
            audit_head::seq,
            audit_head::chain_id,
            audit_head::keyed_from,
            audit_head::key_id,
        ))
        .first(conn)
        .optional()?
        .ok_or_else(|| {
            AppError::internal("the audit chain's head row is missing; run `casesync audit verify`")
        })
}

pub(super) fn set_keying(conn: &mut DbConnection, key: &ChainKey) -> AppResult<()> {
    diesel::update(audit_head::table.find(1))
        .set((
            audit_head::chain_id.eq(&key.chain_id),
            audit_head::keyed_from.eq(key.keyed_from),
            audit_head::key_id.eq(&key.key_id),
        ))
        .execute(conn)?;
    Ok(())
}

/// Opens the chain's key for this database at start, keying the chain
/// from the next position when it is not keyed yet (a new `audit.key` is
/// written, sealed under `kek`), and makes it the one `record` uses.
/// Refuses when the key file and the database do not belong together.
pub fn key_chain(
    conn: &mut DbConnection,
    data_dir: &std::path::Path,
    kek: &Kek,
) -> AppResult<ChainKey> {
    let path = data_dir.join(AUDIT_KEY_FILE);
    let file = AuditKeyFile::load(data_dir, kek).map_err(|e| {
        let text = e.to_string();
        if text.contains("does not open with this key-encryption key") {
            key_refusal(format!("{text}. {}", kek::SHARED_KEYS_FIX))
        } else {
            AppError::internal(text)
        }
    })?;
    let head = head_keying(conn)?;
    let key = match (file, head.chain_id.clone()) {
        (Some(file), Some(chain_id)) => {
            let key = ChainKey::new(&file);
            if chain_id != key.chain_id
                || head.keyed_from != Some(key.keyed_from)
                || head.key_id.as_deref() != Some(key.key_id.as_str())
            {
                return Err(key_refusal(format!(
                    "{} is not this database's audit key (the database's chain is {chain_id}, keyed from seq {}; the file's is {}, from seq {}): put back the audit.key this database was used with",
                    path.display(),
                    head.keyed_from.unwrap_or_default(),
                    key.chain_id,
                    key.keyed_from
                )));
            }
            key
        }
        (Some(file), None) => {
            // The file was written but the start that wrote it did not
            // commit the head: finish that.
            let key = ChainKey::new(&file);
            if head.seq + 1 != key.keyed_from {
                return Err(key_refusal(format!(
                    "{} belongs to another database (it keys from seq {}, this chain's head is at seq {}): move it away, or use it with its own database",
                    path.display(),
                    key.keyed_from,
                    head.seq
                )));
            }
            write_tx(conn, |conn| {
                lock_head(conn)?;
                set_keying(conn, &key)
            })?;
            key
        }
        (None, Some(chain_id)) => {
            return Err(key_refusal(missing_key_message(&path, &chain_id)));
        }
        (None, None) => {
            let key = write_tx(conn, |conn| {
                let (seq, _) = lock_head(conn)?;
                // Another server may have keyed it meanwhile.
                if let Some(chain_id) = head_keying(conn)?.chain_id {
                    return Err(key_refusal(missing_key_message(&path, &chain_id)));
                }
                let file = AuditKeyFile::generate(uuid::Uuid::new_v4().to_string(), seq + 1);
                let key = ChainKey::new(&file);
                file.write_new(data_dir, kek).map_err(AppError::internal)?;
                match set_keying(conn, &key) {
                    Ok(()) => Ok(key),
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        Err(e)
                    }
                }
            })?;
            tracing::warn!(
                file = %path.display(),
                keyed_from = key.keyed_from,
                "the audit chain is now keyed (HMAC-SHA256) under a new key sealed in this file; back it up, and give every server of this database a copy"
            );
            key
        }
    };
    CHAIN_KEYS
        .write()
        .expect("chain key registry not poisoned")
        .insert(key.chain_id.clone(), key.clone());
    Ok(key)
}

pub(super) fn missing_key_message(path: &std::path::Path, chain_id: &str) -> String {
    format!(
        "the audit chain of this database is keyed (chain {chain_id}) but {} is missing: copy it from the server that keyed it (every server of one database needs the same file), or restore it from the backup. {}",
        path.display(),
        kek::SHARED_KEYS_FIX
    )
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
pub(super) struct NewRow<'a> {
    #[diesel(embed)]
    content: Content<'a>,
    seq: i64,
    prev_hash: &'a str,
    hash: &'a str,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub id: i64,
    #[serde(serialize_with = "utc")]
    pub occurred_at: NaiveDateTime,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    /// Position in the chain; `None` for a row the server did not write.
    pub seq: Option<i64>,
    /// The actor's site ids when it acted, space-separated.
    pub actor_sites: Option<String>,
    pub purpose: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    /// Who made the device token the actor used, if one was.
    pub token_created_by: Option<String>,
}

pub(super) fn utc<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true))
}

impl AuditRow {
    pub(super) fn content(&self) -> Content<'_> {
        Content {
            occurred_at: self.occurred_at,
            actor_id: self.actor_id.as_deref(),
            actor_role: self.actor_role.as_deref(),
            actor_sites: self.actor_sites.as_deref(),
            action: &self.action,
            object_type: self.object_type.as_deref(),
            object_id: self.object_id.as_deref(),
            detail: self.detail.as_deref(),
            purpose: self.purpose.as_deref(),
            request_id: self.request_id.as_deref(),
            client_ip: self.client_ip.as_deref(),
            token_created_by: self.token_created_by.as_deref(),
        }
    }
}

/// One thing that happened. `detail` and `purpose` must never hold a
/// password, a token or a child's name.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub actor: Option<&'a Principal>,
    pub action: &'a str,
    pub object_type: Option<&'a str>,
    pub object_id: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub purpose: Option<&'a str>,
}

impl<'a> Event<'a> {
    pub fn new(actor: Option<&'a Principal>, action: &'a str) -> Self {
        Event {
            actor,
            action,
            ..Event::default()
        }
    }

    pub fn object(mut self, kind: &'a str, id: &'a str) -> Self {
        self.object_type = Some(kind);
        self.object_id = Some(id);
        self
    }

    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The purpose the actor stated (an identifying export, a break-glass read).
    pub fn purpose(mut self, purpose: &'a str) -> Self {
        self.purpose = Some(purpose);
        self
    }
}

/// The chain's last position and hash, locked until the transaction ends.
pub(super) fn lock_head(conn: &mut DbConnection) -> AppResult<(i64, String)> {
    let (seq, hash, _) = lock_head_keyed(conn)?;
    Ok((seq, hash))
}

/// The same, with the chain's key when the chain is keyed. Fails closed
/// when it is keyed and this process has not opened its key.
pub(super) fn lock_head_keyed(
    conn: &mut DbConnection,
) -> AppResult<(i64, String, Option<ChainKey>)> {
    let query =
        audit_head::table
            .find(1)
            .select((audit_head::seq, audit_head::hash, audit_head::chain_id));
    let head: Option<(i64, String, Option<String>)> = match conn {
        // Writers on other connections (and servers) wait here, so no two
        // rows get the same position.
        DbConnection::Pg(c) => query.for_update().first(c).optional()?,
        // The write transaction (BEGIN IMMEDIATE) already excludes other
        // writers; a deferred one that read first fails to write rather
        // than fork the chain.
        DbConnection::Sqlite(c) => query.first(c).optional()?,
    };
    // Fail closed: rebuilding a missing head would hide a truncation.
    let (seq, hash, chain_id) = head.ok_or_else(|| {
        AppError::internal("the audit chain's head row is missing; run `casesync audit verify`")
    })?;
    let key = match chain_id {
        None => None,
        Some(chain_id) => Some(registered(&chain_id).ok_or_else(|| {
            key_refusal(format!(
                "the audit chain {chain_id} is keyed but this process has not opened its key (data/audit.key)"
            ))
        })?),
    };
    Ok((seq, hash, key))
}

pub(super) fn set_head(conn: &mut DbConnection, seq: i64, hash: &str) -> AppResult<()> {
    diesel::update(audit_head::table.find(1))
        .set((audit_head::seq.eq(seq), audit_head::hash.eq(hash)))
        .execute(conn)?;
    Ok(())
}

pub(super) fn in_transaction(conn: &mut DbConnection) -> AppResult<bool> {
    let status =
        <DbConnection as Connection>::TransactionManager::transaction_manager_status_mut(conn);
    Ok(status.transaction_depth()?.is_some())
}

/// Appends `event` to the chain, in the caller's transaction when there is
/// one (as a savepoint), else in a write transaction of its own.
pub fn record(conn: &mut DbConnection, origin: &Origin, event: Event<'_>) -> AppResult<()> {
    let sites = event
        .actor
        .map(|p| p.site_ids.join(" "))
        .filter(|s| !s.is_empty());
    let append = |conn: &mut DbConnection| -> AppResult<()> {
        let (head_seq, prev_hash, key) = lock_head_keyed(conn)?;
        let seq = head_seq + 1;
        let content = Content {
            // Taken under the lock, so times rise with positions.
            occurred_at: crate::time::now(),
            actor_id: event.actor.map(|p| p.user_id.as_str()),
            actor_role: event.actor.map(|p| p.role.as_str()),
            actor_sites: sites.as_deref(),
            action: event.action,
            object_type: event.object_type,
            object_id: event.object_id,
            detail: event.detail,
            purpose: event.purpose,
            request_id: origin.request_id.as_deref(),
            client_ip: origin.client_ip.as_deref(),
            token_created_by: event.actor.and_then(|p| p.token_created_by.as_deref()),
        };
        let hash = content.hash(&prev_hash, seq, key.as_ref());
        diesel::insert_into(audit_log::table)
            .values(NewRow {
                content,
                seq,
                prev_hash: &prev_hash,
                hash: &hash,
            })
            .execute(conn)?;
        set_head(conn, seq, &hash)
    };
    if in_transaction(conn)? {
        conn.transaction(append)
    } else {
        write_tx(conn, append)
    }
}

/// One `access_refused` row: a signed-in caller was refused (403). `route`
/// is the route pattern, `detail` the method and path — never the query
/// string or the body, which may name a child.
pub fn record_refusal(
    conn: &mut DbConnection,
    origin: &Origin,
    actor: &Principal,
    route: &str,
    detail: &str,
) -> AppResult<()> {
    let event = Event::new(Some(actor), "access_refused")
        .object("route", route)
        .detail(detail);
    record(conn, origin, event)
}

/// The positions of the items a batch refused with 403.
pub fn refused_items<T>(outcomes: &[AppResult<T>]) -> Vec<usize> {
    use actix_web::ResponseError;
    outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.as_ref()
                .is_err_and(|e| e.status_code() == actix_web::http::StatusCode::FORBIDDEN)
        })
        .map(|(index, _)| index)
        .collect()
}

/// A batch of submissions answers 200 as a whole, so the refusal middleware
/// never sees the 403 of an item inside it: each such item gets its own
/// `access_refused` row here, naming its position, in one transaction.
pub fn record_batch_refusals(
    conn: &mut DbConnection,
    origin: &Origin,
    actor: &Principal,
    refused: &[usize],
) -> AppResult<()> {
    const ROUTE: &str = "/api/v1/submissions/batch";
    write_tx(conn, |conn| {
        refused.iter().try_for_each(|index| {
            let detail = format!("POST {ROUTE} item {index}");
            record_refusal(conn, origin, actor, ROUTE, &detail)
        })
    })
}

/// Chains the rows written before the chain existed (before migration
/// 000011), in id order. Once the chain has begun, an unsealed row was
/// written around the server, and is left for `verify` to report.
pub fn seal_unsealed(conn: &mut DbConnection) -> AppResult<u64> {
    let chain_empty = |conn: &mut DbConnection| -> AppResult<bool> {
        let sealed = diesel::select(diesel::dsl::exists(
            audit_log::table.filter(audit_log::seq.is_not_null()),
        ))
        .get_result::<bool>(conn)?;
        let head: Option<(i64, Option<String>)> = audit_head::table
            .find(1)
            .select((audit_head::seq, audit_head::chain_id))
            .first(conn)
            .optional()?;
        // A keyed chain started after every old row was sealed.
        Ok(!sealed && head == Some((0, None)))
    };
    let unsealed = |conn: &mut DbConnection| -> AppResult<bool> {
        Ok(diesel::select(diesel::dsl::exists(
            audit_log::table.filter(audit_log::seq.is_null()),
        ))
        .get_result(conn)?)
    };
    // A look without the lock first: nearly every start has nothing to do.
    if !chain_empty(conn)? || !unsealed(conn)? {
        return Ok(0);
    }
    write_tx(conn, |conn| {
        let (mut seq, mut prev_hash) = lock_head(conn)?;
        // Another server may have sealed them meanwhile.
        if !chain_empty(conn)? {
            return Ok(0);
        }
        let mut sealed = 0;
        loop {
            // Sealed rows leave the filter, so each page starts afresh.
            let rows: Vec<AuditRow> = audit_log::table
                .filter(audit_log::seq.is_null())
                .order(audit_log::id.asc())
                .limit(PAGE)
                .select(AuditRow::as_select())
                .load(conn)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                seq += 1;
                let hash = row.content().hash(&prev_hash, seq, None);
                diesel::update(audit_log::table.find(row.id))
                    .set((
                        audit_log::seq.eq(seq),
                        audit_log::prev_hash.eq(&prev_hash),
                        audit_log::hash.eq(&hash),
                    ))
                    .execute(conn)?;
                prev_hash = hash;
                sealed += 1;
            }
        }
        set_head(conn, seq, &prev_hash)?;
        Ok(sealed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn content(detail: Option<&str>) -> Content<'_> {
        Content {
            occurred_at: NaiveDate::from_ymd_opt(2026, 11, 23)
                .unwrap()
                .and_hms_micro_opt(9, 30, 0, 120)
                .unwrap(),
            actor_id: Some("u1"),
            actor_role: Some("admin"),
            actor_sites: None,
            action: "login",
            object_type: Some("user"),
            object_id: Some("u1"),
            detail,
            purpose: None,
            request_id: None,
            client_ip: Some("127.0.0.1"),
            token_created_by: None,
        }
    }

    #[test]
    fn the_hash_covers_link_position_and_every_field_unambiguously() {
        let base = content(Some("a")).hash(GENESIS, 1, None);
        assert_eq!(base.len(), 64);
        assert_eq!(base, content(Some("a")).hash(GENESIS, 1, None));
        assert_ne!(base, content(Some("b")).hash(GENESIS, 1, None));
        assert_ne!(base, content(Some("a")).hash(GENESIS, 2, None));
        assert_ne!(base, content(Some("a")).hash(&"1".repeat(64), 1, None));
        // `None` and an empty string are different rows.
        assert_ne!(
            content(None).hash(GENESIS, 1, None),
            content(Some("")).hash(GENESIS, 1, None)
        );
        // Moving text from one field into the next changes the hash.
        let mut shifted = content(Some("a"));
        shifted.object_id = Some("u1\",\"a");
        shifted.detail = None;
        assert_ne!(base, shifted.hash(GENESIS, 1, None));
        // A token's maker is covered when set.
        let mut by_token = content(Some("a"));
        by_token.token_created_by = Some("c1");
        assert_ne!(base, by_token.hash(GENESIS, 1, None));
    }
}
