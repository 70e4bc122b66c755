//! The audit log: who did what to which object, when, from where. Rows are
//! only ever inserted. Written in the same transaction as the change they
//! describe, so a change without its audit row cannot exist.
//!
//! Each row is chained to the one before it: `hash` is SHA-256 over the
//! row's content and the previous row's hash, `seq` its position, and
//! `audit_head` the last position and hash. An edited, deleted or inserted
//! row, or rows deleted at the tail, break the chain and `verify` says where.
//!
//! Keyed chain: from the position `keyed_from` on, `hash` is an HMAC-SHA256
//! under the chain's key (`data/audit.key`, sealed under the KEK, never in
//! the database), so someone who can edit the database cannot re-hash the
//! rows after one they deleted or changed. Rows before that point (written
//! by older versions) stay plain SHA-256 and verify as before. Cutting rows
//! off the end and moving the head back leaves a valid shorter chain: an
//! anchor (`casesync audit anchor`, kept elsewhere) finds that.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use aws_lc_rs::{digest, hmac};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta};
use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::prelude::*;
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::Principal;
use crate::changes;
use crate::crypto::audit_key::{AuditKeyFile, AUDIT_KEY_FILE};
use crate::crypto::kek::Kek;
use crate::db::schema::{audit_head, audit_log};
use crate::db::{write_tx, DbConnection, MultiBackend};
use crate::error::{AppError, AppResult, FieldError};

/// The link of the first row: there is no row before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How `occurred_at` enters the hash: microseconds, as both dialects store.
const HASHED_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Rows read at a time when sealing, verifying and exporting: memory stays
/// flat however long the log.
const PAGE: i64 = 10_000;

/// Rows per page of `GET /audit`.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

/// Problems `verify` lists one by one; beyond this it only counts them.
const MAX_PROBLEMS: usize = 1_000;

/// Where a request came from; attached to every audit row it causes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

/// Every column the hash covers besides the link (`prev_hash`, `seq`).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
struct Content<'a> {
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
    fn hash(&self, prev_hash: &str, seq: i64, key: Option<&ChainKey>) -> String {
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
    fn for_seq(&self, seq: i64) -> Option<&ChainKey> {
        (seq >= self.keyed_from).then_some(self)
    }
}

/// The chain keys this process has opened, by chain id: `record` finds the
/// key of the database it writes to from the head it locks, so callers
/// need nothing but a connection. Several databases (tests) coexist.
static CHAIN_KEYS: LazyLock<RwLock<HashMap<String, ChainKey>>> = LazyLock::new(Default::default);

fn registered(chain_id: &str) -> Option<ChainKey> {
    CHAIN_KEYS
        .read()
        .expect("chain key registry not poisoned")
        .get(chain_id)
        .cloned()
}

/// Why a server may not write to a keyed chain, in words an operator can act on.
fn key_refusal(message: String) -> AppError {
    AppError::internal(message)
}

/// The head's keying columns.
#[derive(Debug, Clone, Queryable)]
struct HeadKeying {
    seq: i64,
    chain_id: Option<String>,
    keyed_from: Option<i64>,
    key_id: Option<String>,
}

fn head_keying(conn: &mut DbConnection) -> AppResult<HeadKeying> {
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

fn set_keying(conn: &mut DbConnection, key: &ChainKey) -> AppResult<()> {
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
    let file = AuditKeyFile::load(data_dir, kek).map_err(AppError::internal)?;
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

fn missing_key_message(path: &std::path::Path, chain_id: &str) -> String {
    format!(
        "the audit chain of this database is keyed (chain {chain_id}) but {} is missing: copy it from the server that keyed it (every server of one database needs the same file), or restore it from the backup",
        path.display()
    )
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
struct NewRow<'a> {
    #[diesel(embed)]
    content: Content<'a>,
    seq: i64,
    prev_hash: &'a str,
    hash: &'a str,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
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

fn utc<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true))
}

impl AuditRow {
    fn content(&self) -> Content<'_> {
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
fn lock_head(conn: &mut DbConnection) -> AppResult<(i64, String)> {
    let (seq, hash, _) = lock_head_keyed(conn)?;
    Ok((seq, hash))
}

/// The same, with the chain's key when the chain is keyed. Fails closed
/// when it is keyed and this process has not opened its key.
fn lock_head_keyed(conn: &mut DbConnection) -> AppResult<(i64, String, Option<ChainKey>)> {
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

fn set_head(conn: &mut DbConnection, seq: i64, hash: &str) -> AppResult<()> {
    diesel::update(audit_head::table.find(1))
        .set((audit_head::seq.eq(seq), audit_head::hash.eq(hash)))
        .execute(conn)?;
    Ok(())
}

fn in_transaction(conn: &mut DbConnection) -> AppResult<bool> {
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

/// One way the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The row's content (or its hash) is not what was chained: edited.
    Altered { seq: i64, id: i64 },
    /// The row does not link to the hash of the row before it.
    Unlinked { seq: i64, id: i64 },
    /// Positions `from..=to` have no row: deleted.
    Missing { from: i64, to: i64 },
    /// A second row at a position (the unique index was dropped).
    Duplicate { seq: i64, id: i64 },
    /// The head is past the last row: rows at the tail were deleted.
    TailMissing { head_seq: i64, last_seq: i64 },
    /// Rows past the head: appended without moving it.
    PastHead { head_seq: i64, last_seq: i64 },
    /// The head's hash is not the last row's.
    HeadHash { seq: i64 },
    /// No head row.
    NoHead,
    /// A row outside the chain: inserted around the server.
    Unsealed { id: i64 },
    /// The head's record of the chain's key is not the key file's.
    KeyingChanged,
    /// The chain is keyed but no key was given to check it with.
    KeyMissing { keyed_from: i64 },
    /// The chain had `keyed_from - 1` rows when it was keyed; fewer now.
    BeforeKeying { keyed_from: i64, head_seq: i64 },
    /// The anchored position is no longer in the chain: cut off.
    AnchorMissing { seq: i64 },
    /// The row at the anchored position has another hash: rewritten.
    AnchorMismatch { seq: i64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Altered { seq, id } => write!(
                f,
                "seq {seq} (id {id}): the row does not match its hash; it was edited"
            ),
            Problem::Unlinked { seq, id } => write!(
                f,
                "seq {seq} (id {id}): prev_hash is not the hash of seq {}; the row before it was edited or replaced",
                seq - 1
            ),
            Problem::Missing { from, to } if from == to => {
                write!(f, "seq {from}: no such row; it was deleted")
            }
            Problem::Missing { from, to } => {
                write!(f, "seq {from} to {to}: no such rows; they were deleted")
            }
            Problem::Duplicate { seq, id } => {
                write!(f, "seq {seq} (id {id}): a second row at the same position")
            }
            Problem::TailMissing { head_seq, last_seq } => write!(
                f,
                "the head is at seq {head_seq} but the last row is seq {last_seq}; rows at the end were deleted"
            ),
            Problem::PastHead { head_seq, last_seq } => write!(
                f,
                "the head is at seq {head_seq} but rows go on to seq {last_seq}; they were added around the server, or the head was moved back"
            ),
            Problem::HeadHash { seq } => write!(
                f,
                "the head's hash is not the hash of seq {seq}; the head or the last row was replaced"
            ),
            Problem::NoHead => write!(f, "the head row (audit_head) is missing"),
            Problem::Unsealed { id } => write!(
                f,
                "id {id}: a row outside the chain (no seq); it was inserted around the server"
            ),
            Problem::KeyingChanged => write!(
                f,
                "the head's record of the chain's key (audit_head chain_id, keyed_from, key_id) is not audit.key's; it was edited, or this is another database's key"
            ),
            Problem::KeyMissing { keyed_from } => write!(
                f,
                "the chain is keyed from seq {keyed_from} but no audit key was given (data/audit.key): rows from there on could not be checked"
            ),
            Problem::BeforeKeying {
                keyed_from,
                head_seq,
            } => write!(
                f,
                "the chain had {} rows when it was keyed but its head is at seq {head_seq}; rows at the end were deleted",
                keyed_from - 1
            ),
            Problem::AnchorMissing { seq } => write!(
                f,
                "the anchor's seq {seq} is no longer in the chain; rows at the end were deleted and the head moved back"
            ),
            Problem::AnchorMismatch { seq } => write!(
                f,
                "seq {seq} does not have the anchor's hash; the chain was rewritten from there"
            ),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Chained rows read.
    pub rows: u64,
    pub head_seq: i64,
    /// Note it outside the server: a later head that does not descend from
    /// it reveals a rewrite of the whole chain.
    pub head_hash: String,
    pub problems: Vec<Problem>,
    /// Problems past the first `MAX_PROBLEMS`, counted only.
    pub more_problems: u64,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty() && self.more_problems == 0
    }

    fn report(&mut self, problem: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.more_problems += 1;
        }
    }
}

/// A head noted outside the server (`casesync audit anchor`): `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(text: &str) -> Result<Anchor, String> {
        let wrong = || {
            format!(
                "{text:?} is not an anchor: SEQ:HASH as `casesync audit anchor` prints it (a position, a colon, 64 hex digits)"
            )
        };
        let (seq, hash) = text.trim().split_once(':').ok_or_else(wrong)?;
        let seq = seq
            .parse::<i64>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(wrong)?;
        let hash = hash.to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(wrong());
        }
        Ok(Anchor { seq, hash })
    }
}

/// Walks the chain in order, a page at a time, recomputing every hash
/// (with `key` from its keying point on) and link, then checks the head,
/// looks for rows outside the chain and, given an anchor, that the chain
/// still holds it.
pub fn verify(
    conn: &mut DbConnection,
    key: Option<&ChainKey>,
    anchor: Option<&Anchor>,
) -> AppResult<Verification> {
    conn.transaction(|conn| {
        // One snapshot for the whole walk: rows appended meanwhile must not
        // look like rows past the head. (SQLite's WAL read is one already.)
        if let DbConnection::Pg(c) = conn {
            c.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        }
        let mut found = walk(conn, key)?;
        check_keying(conn, key, &mut found)?;
        if let Some(anchor) = anchor {
            check_anchor(conn, anchor, &mut found)?;
        }
        Ok(found)
    })
}

/// The head's keying columns against the key file's, and the length the
/// chain had when it was keyed.
fn check_keying(
    conn: &mut DbConnection,
    key: Option<&ChainKey>,
    found: &mut Verification,
) -> AppResult<()> {
    let Ok(head) = head_keying(conn) else {
        return Ok(()); // NoHead is reported already.
    };
    match (key, head.keyed_from) {
        (None, None) => {}
        (None, Some(keyed_from)) => found.report(Problem::KeyMissing { keyed_from }),
        (Some(key), _) => {
            if head.chain_id.as_deref() != Some(key.chain_id.as_str())
                || head.keyed_from != Some(key.keyed_from)
                || head.key_id.as_deref() != Some(key.key_id.as_str())
            {
                found.report(Problem::KeyingChanged);
            }
            if head.seq < key.keyed_from - 1 {
                found.report(Problem::BeforeKeying {
                    keyed_from: key.keyed_from,
                    head_seq: head.seq,
                });
            }
        }
    }
    Ok(())
}

/// The row at the anchor's position must still be there with its hash
/// (the walk has checked everything after it links to it).
fn check_anchor(
    conn: &mut DbConnection,
    anchor: &Anchor,
    found: &mut Verification,
) -> AppResult<()> {
    let hashes: Vec<Option<String>> = audit_log::table
        .filter(audit_log::seq.eq(anchor.seq))
        .select(audit_log::hash)
        .load(conn)?;
    if hashes.is_empty() {
        found.report(Problem::AnchorMissing { seq: anchor.seq });
    } else if !hashes
        .iter()
        .any(|h| h.as_deref() == Some(anchor.hash.as_str()))
    {
        found.report(Problem::AnchorMismatch { seq: anchor.seq });
    }
    Ok(())
}

fn walk(conn: &mut DbConnection, key: Option<&ChainKey>) -> AppResult<Verification> {
    let head: Option<(i64, String)> = audit_head::table
        .find(1)
        .select((audit_head::seq, audit_head::hash))
        .first(conn)
        .optional()?;
    let mut found = Verification {
        rows: 0,
        head_seq: head.as_ref().map_or(0, |h| h.0),
        head_hash: head.as_ref().map_or_else(String::new, |h| h.1.clone()),
        problems: Vec::new(),
        more_problems: 0,
    };
    let keyed_from: Option<i64> = audit_head::table
        .find(1)
        .select(audit_head::keyed_from)
        .first(conn)
        .optional()?
        .flatten();
    let mut expected = 1i64;
    let mut prev = GENESIS.to_string();
    // Keyset on (seq, id): a duplicated position is read, not skipped.
    let mut after: Option<(i64, i64)> = None;
    loop {
        let mut query = audit_log::table
            .filter(audit_log::seq.is_not_null())
            .select(AuditRow::as_select())
            .order((audit_log::seq.asc(), audit_log::id.asc()))
            .limit(PAGE)
            .into_boxed();
        if let Some((seq, id)) = after {
            query = query.filter(
                audit_log::seq
                    .gt(seq)
                    .or(audit_log::seq.eq(seq).and(audit_log::id.gt(id))),
            );
        }
        let rows: Vec<AuditRow> = query.load(conn)?;
        for row in &rows {
            let seq = row.seq.expect("filtered on seq");
            let linked = row.prev_hash.as_deref() == Some(prev.as_str());
            if seq < expected {
                found.report(Problem::Duplicate { seq, id: row.id });
            } else if seq > expected {
                // The broken link here is the same deletion; one report.
                found.report(Problem::Missing {
                    from: expected,
                    to: seq - 1,
                });
            } else if !linked {
                found.report(Problem::Unlinked { seq, id: row.id });
            }
            // Without the key, keyed rows' hashes cannot be recomputed
            // (KeyMissing says so); their links are still checked.
            let keyed_without_key = key.is_none() && keyed_from.is_some_and(|k| seq >= k);
            if !keyed_without_key {
                let recomputed = row.content().hash(
                    row.prev_hash.as_deref().unwrap_or_default(),
                    seq,
                    key.and_then(|k| k.for_seq(seq)),
                );
                if row.hash.as_deref() != Some(recomputed.as_str()) {
                    found.report(Problem::Altered { seq, id: row.id });
                }
            }
            prev = row.hash.clone().unwrap_or_default();
            expected = expected.max(seq + 1);
            found.rows += 1;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => after = last.seq.map(|s| (s, last.id)),
            _ => break,
        }
    }
    let last_seq = expected - 1;
    match &head {
        None => found.report(Problem::NoHead),
        Some((head_seq, _)) if *head_seq > last_seq => found.report(Problem::TailMissing {
            head_seq: *head_seq,
            last_seq,
        }),
        Some((head_seq, _)) if *head_seq < last_seq => found.report(Problem::PastHead {
            head_seq: *head_seq,
            last_seq,
        }),
        Some((head_seq, hash)) if *hash != prev => {
            found.report(Problem::HeadHash { seq: *head_seq })
        }
        Some(_) => {}
    }
    let mut after_id = i64::MIN;
    loop {
        let ids: Vec<i64> = audit_log::table
            .filter(audit_log::seq.is_null())
            .filter(audit_log::id.gt(after_id))
            .order(audit_log::id.asc())
            .select(audit_log::id)
            .limit(PAGE)
            .load(conn)?;
        for id in &ids {
            found.report(Problem::Unsealed { id: *id });
        }
        match ids.last() {
            Some(last) if ids.len() as i64 == PAGE => after_id = *last,
            _ => break,
        }
    }
    Ok(found)
}

/// The filters of `GET /audit` and its CSV export, as the query string has
/// them; `filter` and `limit` check them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// On or after: a day (YYYY-MM-DD, UTC) or an RFC 3339 time.
    pub from: Option<String>,
    /// On or before: a day (the whole day) or an RFC 3339 time.
    pub to: Option<String>,
    /// A user id.
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
    /// The CSV export only: `false` leaves formulas as they are
    /// (`sheet`), recorded on its audit row.
    pub formula_escape: Option<bool>,
}

/// Which rows: all of them by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Occurred at or after.
    pub from: Option<NaiveDateTime>,
    /// Occurred before (exclusive).
    pub until: Option<NaiveDateTime>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
}

/// A 400 that names the query parameter at fault.
fn bad_param(name: &str, message: &str) -> AppError {
    AppError::BadRequest {
        detail: format!("{name}: {message}"),
        errors: vec![FieldError::new(format!("/{name}"), message)],
    }
}

/// An empty parameter (`?action=`) is an absent one.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A day, or a time in RFC 3339; `end` makes it the exclusive end of a
/// range that includes the day (or the instant) named.
pub fn parse_bound(name: &str, text: &str, end: bool) -> AppResult<NaiveDateTime> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let day = if end { day.succ_opt() } else { Some(day) };
        return day
            .map(|d| d.and_time(chrono::NaiveTime::MIN))
            .ok_or_else(|| bad_param(name, "out of range"));
    }
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|_| bad_param(name, "a day (YYYY-MM-DD) or a time (RFC 3339)"))?
        .naive_utc();
    Ok(if end {
        at + TimeDelta::microseconds(1)
    } else {
        at
    })
}

impl AuditQuery {
    pub fn filter(&self) -> AppResult<AuditFilter> {
        let from = given(&self.from)
            .map(|t| parse_bound("from", t, false))
            .transpose()?;
        let until = given(&self.to)
            .map(|t| parse_bound("to", t, true))
            .transpose()?;
        if let (Some(from), Some(until)) = (from, until) {
            if until <= from {
                return Err(bad_param("to", "is before from"));
            }
        }
        let text = |v: &Option<String>, name: &str| -> AppResult<Option<String>> {
            match given(v) {
                Some(v) if v.len() > 200 => Err(bad_param(name, "longer than 200 characters")),
                other => Ok(other.map(str::to_string)),
            }
        };
        Ok(AuditFilter {
            from,
            until,
            actor: text(&self.actor, "actor")?,
            action: text(&self.action, "action")?,
            object_type: text(&self.object_type, "object_type")?,
            object_id: text(&self.object_id, "object_id")?,
        })
    }

    /// The filter of an export, which has no pages.
    pub fn export_filter(&self) -> AppResult<AuditFilter> {
        for (name, value) in [("cursor", &self.cursor), ("limit", &self.limit)] {
            if value.is_some() {
                return Err(bad_param(name, "an export has no pages"));
            }
        }
        self.filter()
    }

    pub fn limit(&self) -> AppResult<i64> {
        match given(&self.limit) {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad_param("limit", &format!("a number from 1 to {MAX_LIMIT}"))),
        }
    }

    /// The position after which the next page starts.
    pub fn cursor(&self) -> AppResult<Option<i64>> {
        given(&self.cursor)
            .map(|c| {
                changes::decode_cursor(c)
                    .map_err(|_| bad_param("cursor", "not a cursor this server gave"))
            })
            .transpose()
    }
}

impl AuditFilter {
    /// The filter in words, for the audit row of an export.
    pub fn describe(&self) -> String {
        let at = |t: NaiveDateTime| t.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut parts = Vec::new();
        if let Some(t) = self.from {
            parts.push(format!("from {}", at(t)));
        }
        if let Some(t) = self.until {
            parts.push(format!("before {}", at(t)));
        }
        for (name, value) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("object_type", &self.object_type),
            ("object_id", &self.object_id),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name} {v}"));
            }
        }
        if parts.is_empty() {
            "all rows".into()
        } else {
            parts.join("; ")
        }
    }

    /// The actor as the log stores it: a user named by username or id
    /// becomes their id; a shell actor (`os:alice`) stays as written. An
    /// unknown user is 422, never an empty log that reads as "did nothing".
    pub fn resolve_actor(&mut self, conn: &mut DbConnection) -> AppResult<()> {
        if let Some(name) = self.actor.as_deref().filter(|n| !n.starts_with("os:")) {
            let user = crate::auth::users::resolve(conn, name)?.ok_or_else(|| {
                AppError::invalid_field("/actor", format!("no user with username or id {name:?}"))
            })?;
            self.actor = Some(user.id);
        }
        Ok(())
    }

    fn apply<'a>(
        &self,
        mut query: audit_log::BoxedQuery<'a, MultiBackend>,
    ) -> audit_log::BoxedQuery<'a, MultiBackend> {
        query = query.filter(audit_log::seq.is_not_null());
        if let Some(t) = self.from {
            query = query.filter(audit_log::occurred_at.ge(t));
        }
        if let Some(t) = self.until {
            query = query.filter(audit_log::occurred_at.lt(t));
        }
        if let Some(v) = &self.actor {
            query = query.filter(audit_log::actor_id.eq(v.clone()));
        }
        if let Some(v) = &self.action {
            query = query.filter(audit_log::action.eq(v.clone()));
        }
        if let Some(v) = &self.object_type {
            query = query.filter(audit_log::object_type.eq(v.clone()));
        }
        if let Some(v) = &self.object_id {
            query = query.filter(audit_log::object_id.eq(v.clone()));
        }
        query
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub items: Vec<AuditRow>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Chained rows passing `filter`, newest first, `limit` at a time after
/// the position `before` (from a cursor).
pub fn query(
    conn: &mut DbConnection,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> AppResult<AuditPage> {
    let mut query = filter
        .apply(audit_log::table.into_boxed())
        .select(AuditRow::as_select());
    if let Some(seq) = before {
        query = query.filter(audit_log::seq.lt(seq));
    }
    let mut items: Vec<AuditRow> = query
        .order(audit_log::seq.desc())
        .limit(limit + 1)
        .load(conn)?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().and_then(|r| r.seq).map(changes::encode_cursor)
    } else {
        None
    };
    Ok(AuditPage { items, next_cursor })
}

/// The columns of the CSV export.
const CSV_HEADER: [&str; 15] = [
    "seq",
    "occurred_at",
    "actor_id",
    "actor_role",
    "actor_sites",
    "action",
    "object_type",
    "object_id",
    "detail",
    "purpose",
    "request_id",
    "client_ip",
    "token_created_by",
    "prev_hash",
    "hash",
];

/// Writes the chained rows passing `filter` as CSV (RFC 4180), in chain
/// order, a page at a time to `sink`; stops when the sink does (the client
/// went away). Returns the rows written. Purposes and details are people's
/// words: formulas in them are neutralised unless `formulas` says not
/// (`sheet`).
pub fn write_csv(
    conn: &mut DbConnection,
    filter: &AuditFilter,
    formulas: crate::sheet::Formulas,
    sink: &mut (dyn FnMut(Vec<u8>) -> bool + Send),
) -> AppResult<u64> {
    use crate::sheet::Chunk;
    let mut out = Chunk::new(formulas);
    out.record(CSV_HEADER)?;
    let mut written = 0u64;
    let mut after = 0i64;
    loop {
        let rows: Vec<AuditRow> = filter
            .apply(audit_log::table.into_boxed())
            .select(AuditRow::as_select())
            .filter(audit_log::seq.gt(after))
            .order(audit_log::seq.asc())
            .limit(PAGE)
            .load(conn)?;
        for row in &rows {
            let seq = row.seq.unwrap_or_default();
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            out.record([
                seq.to_string(),
                row.occurred_at.format(HASHED_TIME).to_string(),
                opt(&row.actor_id),
                opt(&row.actor_role),
                opt(&row.actor_sites),
                row.action.clone(),
                opt(&row.object_type),
                opt(&row.object_id),
                opt(&row.detail),
                opt(&row.purpose),
                opt(&row.request_id),
                opt(&row.client_ip),
                opt(&row.token_created_by),
                opt(&row.prev_hash),
                opt(&row.hash),
            ])?;
            after = seq;
            written += 1;
        }
        let chunk = std::mem::replace(&mut out, Chunk::new(formulas)).bytes()?;
        if (!chunk.is_empty() && !sink(chunk)) || (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(written)
}

/// The head as an anchor; `None` for an empty chain.
pub fn head(conn: &mut DbConnection) -> AppResult<Option<Anchor>> {
    let head: Option<(i64, String)> = audit_head::table
        .find(1)
        .select((audit_head::seq, audit_head::hash))
        .first(conn)
        .optional()?;
    Ok(head
        .filter(|(seq, _)| *seq > 0)
        .map(|(seq, hash)| Anchor { seq, hash }))
}

/// The most recent rows first, at most `limit`.
pub fn recent(conn: &mut DbConnection, limit: i64) -> AppResult<Vec<AuditRow>> {
    Ok(audit_log::table
        .select(AuditRow::as_select())
        .order(audit_log::id.desc())
        .limit(limit)
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn bounds_take_days_and_times_and_name_the_parameter() {
        let day = parse_bound("from", "2026-11-23", false).unwrap();
        assert_eq!(day.to_string(), "2026-11-23 00:00:00");
        let end = parse_bound("to", "2026-11-23", true).unwrap();
        assert_eq!(end.to_string(), "2026-11-24 00:00:00");
        let at = parse_bound("to", "2026-11-23T10:00:00+02:00", true).unwrap();
        assert_eq!(at.to_string(), "2026-11-23 08:00:00.000001");
        let AppError::BadRequest { errors, .. } =
            parse_bound("from", "yesterday", false).unwrap_err()
        else {
            panic!("a bad request")
        };
        assert_eq!(errors[0].pointer, "/from");
        let query = AuditQuery {
            from: Some("2026-11-24".into()),
            to: Some("2026-11-23".into()),
            ..Default::default()
        };
        assert!(matches!(query.filter(), Err(AppError::BadRequest { .. })));
        for limit in ["0", "501", "ten"] {
            let query = AuditQuery {
                limit: Some(limit.into()),
                ..Default::default()
            };
            assert!(query.limit().is_err(), "{limit}");
        }
    }
}
