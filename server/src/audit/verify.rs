//! Verifying the chain: every hash and link, the head, rows outside the
//! chain, the keying, and anchors kept elsewhere (`casesync audit anchor`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::db::schema::{audit_head, audit_log};
use crate::db::{DbConnection, Pool};
use crate::error::{AppError, AppResult};

use super::chain::*;

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
    verify_counting(conn, key, anchor, None)
}

/// `verify`, counting the rows checked into `checked` as it goes (the
/// console's background check shows it).
fn verify_counting(
    conn: &mut DbConnection,
    key: Option<&ChainKey>,
    anchor: Option<&Anchor>,
    checked: Option<&AtomicU64>,
) -> AppResult<Verification> {
    conn.transaction(|conn| {
        // One snapshot for the whole walk: rows appended meanwhile must not
        // look like rows past the head. (SQLite's WAL read is one already.)
        if let DbConnection::Pg(c) = conn {
            c.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        }
        let mut found = walk(conn, key, checked)?;
        check_keying(conn, key, &mut found)?;
        if let Some(anchor) = anchor {
            check_anchor(conn, anchor, &mut found)?;
        }
        Ok(found)
    })
}

/// The head's keying columns against the key file's, and the length the
/// chain had when it was keyed.
pub(super) fn check_keying(
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
pub(super) fn check_anchor(
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

/// The walk of `verify`; `checked` (when given) counts the rows read so
/// far, for a progress bar.
pub(super) fn walk(
    conn: &mut DbConnection,
    key: Option<&ChainKey>,
    checked: Option<&AtomicU64>,
) -> AppResult<Verification> {
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
        if let Some(checked) = checked {
            checked.store(found.rows, Ordering::Relaxed);
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

/// `verify` as a running server can: with the key it opened for this
/// database's chain at start (`key_chain`), no anchor (those are kept
/// outside the server). For the console's audit page; the command line's
/// `casesync audit verify` opens the key file itself.
pub fn verify_here(conn: &mut DbConnection) -> AppResult<Verification> {
    verify_here_counting(conn, None)
}

fn verify_here_counting(
    conn: &mut DbConnection,
    checked: Option<&AtomicU64>,
) -> AppResult<Verification> {
    let key = head_keying(conn)?
        .chain_id
        .and_then(|chain_id| registered(&chain_id));
    verify_counting(conn, key.as_ref(), None, checked)
}

/// The console's check of the chain: `verify_here` on a thread of its own,
/// one at a time, started by an admin; the page reads its progress and the
/// last result instead of walking a million rows while it renders (#18).
#[derive(Debug, Default)]
pub struct ChainCheck {
    state: Mutex<CheckInner>,
}

#[derive(Debug, Default)]
struct CheckInner {
    running: Option<(Started, Arc<AtomicU64>)>,
    last: Option<CheckDone>,
}

/// Who started a check, when, and how many rows the chain had then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub at: NaiveDateTime,
    pub by: String,
    pub total: i64,
}

/// A finished check: what it found, or why it could not finish.
#[derive(Debug, Clone)]
pub struct CheckDone {
    pub started: Started,
    pub finished_at: NaiveDateTime,
    pub outcome: Result<Verification, String>,
}

/// What the page shows: the check running (with the rows checked so far),
/// and the last one finished.
#[derive(Debug, Clone, Default)]
pub struct CheckState {
    pub running: Option<(Started, u64)>,
    pub last: Option<CheckDone>,
}

impl ChainCheck {
    pub fn state(&self) -> CheckState {
        let inner = self.state.lock().expect("chain check lock");
        CheckState {
            running: inner
                .running
                .as_ref()
                .map(|(started, checked)| (started.clone(), checked.load(Ordering::Relaxed))),
            last: inner.last.clone(),
        }
    }

    /// Starts a check by `by` on a thread of its own with a connection of
    /// `pool`; `false` (and nothing started) while one runs.
    pub fn start(self: &Arc<Self>, pool: &Pool, by: &str) -> AppResult<bool> {
        let mut conn = pool.get()?;
        let total = head(&mut conn)?.map_or(0, |h| h.seq);
        let started = Started {
            at: crate::time::now(),
            by: by.to_string(),
            total,
        };
        let checked = Arc::new(AtomicU64::new(0));
        {
            let mut inner = self.state.lock().expect("chain check lock");
            if inner.running.is_some() {
                return Ok(false);
            }
            inner.running = Some((started.clone(), checked.clone()));
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("audit-chain-check".into())
            .spawn(move || {
                let outcome =
                    verify_here_counting(&mut conn, Some(&checked)).map_err(|e| e.to_string());
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "the audit chain check did not finish");
                }
                let mut inner = this.state.lock().expect("chain check lock");
                inner.running = None;
                inner.last = Some(CheckDone {
                    started,
                    finished_at: crate::time::now(),
                    outcome,
                });
            });
        if let Err(e) = spawned {
            self.state.lock().expect("chain check lock").running = None;
            return Err(AppError::internal(format!("starting the chain check: {e}")));
        }
        Ok(true)
    }
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
