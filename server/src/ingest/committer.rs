//! Group commit: one writer thread stores prepared submissions, as many as
//! have queued up (up to a limit) in one transaction. A durable commit (an
//! fsync on SQLite) is paid once per group instead of once per submission,
//! and nobody hears "stored" before the commit that stored it. A member
//! that fails fails alone: the group is then written again with each
//! member in a savepoint of its own (see [`Isolation`]).
//!
//! The same thread appends the audit rows of reads that happen all the
//! time beside ingest (a phone's sync that carried cases) to the next
//! group's transaction, and the reader does not wait for that commit
//! (#19 item 7). In the group they share its fsync; on SQLite they neither
//! wait for the one write lock beside the committer (whose busy wait
//! sleeps in steps of milliseconds) nor empty its connection's page cache,
//! as a write on any other connection does. Not waiting: a sync that
//! waited for its row's commit waited behind every submission queued
//! before it — with 1,000 phones beside a push of 32 clients, full syncs
//! took 330 ms at the median and 2.5 s at p99, against 2 ms for the read.
//! The row is committed with the next group, before any submission
//! acknowledged after the sync; a crash in between loses the rows of the
//! syncs answered since the last commit (docs/operations.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{audit_received, settle_race, store_unaudited, Prepared, Stored};
use crate::audit::{self, Event, Origin};
use crate::auth::Principal;
use crate::config::DatabaseTarget;
use crate::db::{self, write_tx, Database, DbConnection, Pool};
use crate::error::{AppError, AppResult};

/// Most submissions stored by one commit.
pub const MAX_GROUP: usize = 128;

enum Job {
    Store(Box<StoreJob>),
    /// Audit rows are waiting in `Committer::rows`.
    Wake,
}

struct StoreJob {
    prepared: Prepared,
    who: Principal,
    origin: Origin,
    reply: oneshot::Sender<AppResult<Stored>>,
}

/// An audit row to append for `who`: `action`, with `detail`.
struct AuditRow {
    who: Principal,
    origin: Origin,
    action: &'static str,
    detail: String,
}

/// Tokens used, whose `last_used_at` is due: (token id, when).
type Touches = Arc<Mutex<Vec<(String, chrono::NaiveDateTime)>>>;

type Rows = Arc<Mutex<Vec<AuditRow>>>;

/// The handle requests use; the writer thread ends when the last handle is
/// dropped.
pub struct Committer {
    queue: mpsc::Sender<Job>,
    rows: Rows,
    touches: Touches,
}

impl Committer {
    pub fn start(pool: Pool, database: Database) -> Committer {
        let (queue, jobs) = mpsc::channel(4 * MAX_GROUP);
        let rows = Rows::default();
        let touches = Touches::default();
        let (taken, touched) = (rows.clone(), touches.clone());
        std::thread::Builder::new()
            .name("casesync-commit".into())
            .spawn(move || run(Writer::new(pool, database), jobs, taken, touched))
            .expect("start the commit thread");
        Committer {
            queue,
            rows,
            touches,
        }
    }

    /// Stores `prepared` and answers once it is committed.
    pub async fn store(
        &self,
        prepared: Prepared,
        who: Principal,
        origin: Origin,
    ) -> AppResult<Stored> {
        self.enqueue(prepared, who, origin).await?.await
    }

    /// Queues `prepared` behind everything queued before it (a batch's
    /// items are stored in their order); the returned future answers once
    /// it is committed.
    pub async fn enqueue(
        &self,
        prepared: Prepared,
        who: Principal,
        origin: Origin,
    ) -> AppResult<impl std::future::Future<Output = AppResult<Stored>>> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Store(Box::new(StoreJob {
                prepared,
                who,
                origin,
                reply,
            })))
            .await
            .map_err(|_| writer_gone())?;
        Ok(async move { answer.await.map_err(|_| writer_gone())? })
    }

    /// Appends the audit row `action` (with `detail`) of `who` with the
    /// next group, without waiting for it: before any submission
    /// acknowledged after this call (see the module's note).
    pub fn audit_soon(&self, who: Principal, origin: Origin, action: &'static str, detail: String) {
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(AuditRow {
                who,
                origin,
                action,
                detail,
            });
        // Wakes an idle writer; a full queue means a busy one, which takes
        // the row with its next group.
        let _ = self.queue.try_send(Job::Wake);
    }

    /// Sets token `id`'s `last_used_at` to `at` with the next group,
    /// without waiting (`http::extract::note_token_use`).
    pub fn touch_soon(&self, id: String, at: chrono::NaiveDateTime) {
        self.touches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((id, at));
        let _ = self.queue.try_send(Job::Wake);
    }
}

/// The committer's connection: its own (`db::dedicated`), opened again
/// after a failure, or one from the pool while it cannot be opened.
struct Writer {
    pool: Pool,
    database: Database,
    own: Option<DbConnection>,
    /// When the own connection last did work: a PostgreSQL connection idle
    /// longer than [`IDLE_CHECK`] is checked before use, as the pool checks
    /// its own on check-out (the server may have closed it meanwhile).
    last_used: Instant,
}

/// How long a network connection may sit idle before it is checked.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl Writer {
    fn new(pool: Pool, database: Database) -> Writer {
        Writer {
            pool,
            database,
            own: None,
            last_used: Instant::now(),
        }
    }

    /// Runs `work` on the writer's connection; a connection that failed
    /// is dropped, and the next group opens a new one.
    fn with<T>(&mut self, work: impl FnOnce(&mut DbConnection) -> AppResult<T>) -> AppResult<T> {
        let network = matches!(self.database.target, DatabaseTarget::Postgres(_));
        if network && self.last_used.elapsed() > IDLE_CHECK {
            if let Some(conn) = self.own.as_mut() {
                if diesel::r2d2::R2D2Connection::ping(conn).is_err() {
                    tracing::info!("the committer's idle connection was closed; opening a new one");
                    self.own = None;
                }
            }
        }
        self.last_used = Instant::now();
        if self.own.is_none() {
            match db::dedicated(&self.database) {
                Ok(conn) => self.own = Some(conn),
                Err(err) => {
                    tracing::warn!(error = %err, "the committer's own connection did not open; using the pool");
                    return work(&mut *self.pool.get()?);
                }
            }
        }
        let conn = self.own.as_mut().expect("opened above");
        let outcome = work(conn);
        if outcome.is_err() && diesel::r2d2::R2D2Connection::is_broken(conn) {
            self.own = None;
        }
        outcome
    }
}

fn run(mut writer: Writer, mut jobs: mpsc::Receiver<Job>, rows: Rows, touches: Touches) {
    let take = || std::mem::take(&mut *rows.lock().unwrap_or_else(|p| p.into_inner()));
    let touched = || std::mem::take(&mut *touches.lock().unwrap_or_else(|p| p.into_inner()));
    while let Some(first) = jobs.blocking_recv() {
        // Whatever queued up while the previous group was committing.
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let stores: Vec<StoreJob> = group
            .into_iter()
            .filter_map(|job| match job {
                Job::Store(job) => Some(*job),
                Job::Wake => None,
            })
            .collect();
        // Taken after the group's jobs: a row added before a submission
        // was queued is in that submission's group or an earlier one.
        let (audits, touches) = (take(), touched());
        if !stores.is_empty() || !audits.is_empty() || !touches.is_empty() {
            commit_group(&mut writer, stores, audits, touches);
        }
    }
    // The last rows, once every handle is gone (the server stops).
    let (audits, touches) = (take(), touched());
    if !audits.is_empty() || !touches.is_empty() {
        commit_group(&mut writer, Vec::new(), audits, touches);
    }
}

fn commit_group(
    writer: &mut Writer,
    stores: Vec<StoreJob>,
    audits: Vec<AuditRow>,
    touches: Vec<(String, chrono::NaiveDateTime)>,
) {
    let size = stores.len();
    let outcomes = writer.with(|conn| {
        let group = Group {
            stores: &stores,
            audits: &audits,
            touches: &touches,
        };
        let written = match write_tx(conn, |c| group.write(c, Isolation::Together)) {
            Err(GroupError::MemberFailed) => {
                tracing::debug!(
                    size,
                    "a member of the group failed; writing the group again, each member alone"
                );
                write_tx(conn, |c| group.write(c, Isolation::EachAlone))
            }
            other => other,
        };
        let (stored, audited) = written.map_err(GroupError::into_app)?;
        let stored = stores
            .iter()
            .zip(stored)
            .map(|(job, outcome)| outcome.or_else(|err| settle_race(conn, &job.prepared, err)))
            .collect::<Vec<_>>();
        Ok((stored, audited))
    });
    match outcomes {
        Ok((stored, audited)) => {
            for (job, outcome) in stores.into_iter().zip(stored) {
                // A client that went away learns the outcome when it retries.
                let _ = job.reply.send(outcome);
            }
            for (row, outcome) in audits.iter().zip(audited) {
                if let Err(err) = outcome {
                    tracing::error!(error = %err, action = row.action, actor = %row.who.user_id, "an audit row of a read was not written");
                }
            }
        }
        Err(err) => {
            tracing::error!(error = %err, size, rows = audits.len(), "a group commit failed, with the audit rows of reads it held");
            for job in stores {
                let _ = job.reply.send(Err(clone_error(&err)));
            }
        }
    }
}

/// How the members of a group (its submissions, the audit rows of reads,
/// the token stamps) are kept apart inside its one transaction.
#[derive(Clone, Copy)]
enum Isolation {
    /// No savepoints; a member that fails ends the attempt, and the whole
    /// group is written again [`Isolation::EachAlone`]. Failures are rare
    /// (a conflicting resend, a form naming a case it may not change), and
    /// a savepoint is not free: SQLite copies each page a member changes
    /// for the first time into the savepoint's journal, which took a sixth of
    /// the commit thread's time with one savepoint per member.
    Together,
    /// Each member in its own savepoint: one that fails fails alone.
    EachAlone,
}

/// Why a group's transaction did not commit.
enum GroupError {
    /// A member failed while written [`Isolation::Together`].
    MemberFailed,
    /// The transaction itself failed: every member fails with it.
    Failed(AppError),
}

impl From<diesel::result::Error> for GroupError {
    fn from(err: diesel::result::Error) -> Self {
        GroupError::Failed(err.into())
    }
}

impl From<AppError> for GroupError {
    fn from(err: AppError) -> Self {
        GroupError::Failed(err)
    }
}

impl GroupError {
    fn into_app(self) -> AppError {
        match self {
            GroupError::Failed(err) => err,
            GroupError::MemberFailed => AppError::internal("a member failed outside a savepoint"),
        }
    }
}

/// What became of each member: each submission's outcome, then each audit
/// row's.
type Written = (Vec<AppResult<Stored>>, Vec<AppResult<()>>);

/// What one commit writes.
struct Group<'a> {
    stores: &'a [StoreJob],
    audits: &'a [AuditRow],
    touches: &'a [(String, chrono::NaiveDateTime)],
}

impl Group<'_> {
    /// Writes every member, inside the caller's transaction.
    fn write(&self, conn: &mut DbConnection, isolation: Isolation) -> Result<Written, GroupError> {
        let mut stored = Vec::with_capacity(self.stores.len());
        for job in self.stores {
            stored.push(member(conn, isolation, |c| {
                store_unaudited(c, &job.who, &job.prepared)
            })?);
        }
        // The audit rows last, once every case row the group touches is
        // locked (see `audit_received`).
        for (job, outcome) in self.stores.iter().zip(&stored) {
            if let Ok(Stored::Created(receipt)) = outcome {
                audit_received(conn, &job.who, &job.origin, &job.prepared, receipt)?;
            }
        }
        let mut audited = Vec::with_capacity(self.audits.len());
        for row in self.audits {
            audited.push(member(conn, isolation, |c| {
                let event = Event::new(Some(&row.who), row.action).detail(&row.detail);
                audit::record(c, &row.origin, event)
            })?);
        }
        for (id, at) in self.touches {
            // Advisory: a token revoked meanwhile is simply not found.
            let touched = member(conn, isolation, |c| crate::auth::tokens::touch(c, id, *at))?;
            if let Err(err) = touched {
                tracing::warn!(error = %err, "a token's last use was not recorded");
            }
        }
        Ok((stored, audited))
    }
}

/// Runs one member's `work` as `isolation` says: in a savepoint of its own
/// (its failure is its outcome), or with the group (its failure ends the
/// attempt).
fn member<T>(
    conn: &mut DbConnection,
    isolation: Isolation,
    work: impl FnOnce(&mut DbConnection) -> AppResult<T>,
) -> Result<AppResult<T>, GroupError> {
    match isolation {
        Isolation::EachAlone => Ok(conn.transaction(work)),
        Isolation::Together => work(conn).map(Ok).map_err(|_| GroupError::MemberFailed),
    }
}

fn writer_gone() -> AppError {
    AppError::Unavailable("the submission writer has stopped".into())
}

/// The same failure for every member of a group that could not commit.
fn clone_error(err: &AppError) -> AppError {
    match err {
        AppError::Unavailable(m) => AppError::Unavailable(m.clone()),
        _ => AppError::Unavailable("the submission could not be stored; try again".into()),
    }
}
