//! Group commit: one writer thread stores prepared submissions, as many as
//! have queued up (up to a limit) in one transaction, each in its own
//! savepoint. A durable commit (an fsync on SQLite) is paid once per group
//! instead of once per submission, and nobody hears "stored" before the
//! commit that stored it.
//!
//! The same thread appends the audit rows of reads that happen all the
//! time beside ingest (a phone's sync that carried cases): in the group's
//! transaction they share its fsync, and on SQLite they neither wait for
//! the one write lock beside the committer (whose busy wait sleeps in
//! steps of milliseconds) nor empty its connection's page cache, as a
//! write on any other connection does (#19 item 7).

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
    Store(StoreJob),
    Audit(AuditJob),
}

struct StoreJob {
    prepared: Prepared,
    who: Principal,
    origin: Origin,
    reply: oneshot::Sender<AppResult<Stored>>,
}

/// An audit row to append for `who`: `action`, with `detail`.
struct AuditJob {
    who: Principal,
    origin: Origin,
    action: &'static str,
    detail: String,
    reply: oneshot::Sender<AppResult<()>>,
}

/// The handle requests use; the writer thread ends when the last handle is
/// dropped.
pub struct Committer {
    queue: mpsc::Sender<Job>,
}

impl Committer {
    pub fn start(pool: Pool, database: Database) -> Committer {
        let (queue, jobs) = mpsc::channel(4 * MAX_GROUP);
        std::thread::Builder::new()
            .name("casesync-commit".into())
            .spawn(move || run(Writer::new(pool, database), jobs))
            .expect("start the commit thread");
        Committer { queue }
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
            .send(Job::Store(StoreJob {
                prepared,
                who,
                origin,
                reply,
            }))
            .await
            .map_err(|_| writer_gone())?;
        Ok(async move { answer.await.map_err(|_| writer_gone())? })
    }

    /// Appends the audit row `action` (with `detail`) of `who` in the next
    /// group's transaction and answers once it is committed, so what it
    /// records is not disclosed before it is on disk.
    pub async fn audit(
        &self,
        who: Principal,
        origin: Origin,
        action: &'static str,
        detail: String,
    ) -> AppResult<()> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Audit(AuditJob {
                who,
                origin,
                action,
                detail,
                reply,
            }))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
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

fn run(mut writer: Writer, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        // Whatever queued up while the previous group was committing.
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut writer, group);
    }
}

fn commit_group(writer: &mut Writer, group: Vec<Job>) {
    let size = group.len();
    let (mut stores, mut audits) = (Vec::new(), Vec::new());
    for job in group {
        match job {
            Job::Store(job) => stores.push(job),
            Job::Audit(job) => audits.push(job),
        }
    }
    let outcomes = writer.with(|conn| {
        let (stored, audited) = write_tx(conn, |conn: &mut DbConnection| {
            let stored: Vec<AppResult<Stored>> = stores
                .iter()
                .map(|job| conn.transaction(|c| store_unaudited(c, &job.who, &job.prepared)))
                .collect();
            // The audit rows last, once every case row the group touches is
            // locked (see `audit_received`).
            for (job, outcome) in stores.iter().zip(&stored) {
                if let Ok(Stored::Created(receipt)) = outcome {
                    audit_received(conn, &job.who, &job.origin, &job.prepared, receipt)?;
                }
            }
            // Each reader's row in a savepoint: one that fails fails alone.
            let audited: Vec<AppResult<()>> = audits
                .iter()
                .map(|job| {
                    let event = Event::new(Some(&job.who), job.action).detail(&job.detail);
                    audit::record(conn, &job.origin, event)
                })
                .collect();
            Ok::<_, AppError>((stored, audited))
        })?;
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
            for (job, outcome) in audits.into_iter().zip(audited) {
                let _ = job.reply.send(outcome);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, size, "a group commit failed");
            for job in stores {
                let _ = job.reply.send(Err(clone_error(&err)));
            }
            for job in audits {
                let _ = job.reply.send(Err(clone_error(&err)));
            }
        }
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
