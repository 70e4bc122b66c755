//! Group commit: one writer thread stores prepared submissions, as many as
//! have queued up (up to a limit) in one transaction, each in its own
//! savepoint. A durable commit (an fsync on SQLite) is paid once per group
//! instead of once per submission, and nobody hears "stored" before the
//! commit that stored it.

use std::time::{Duration, Instant};

use diesel::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{audit_received, settle_race, store_unaudited, Prepared, Stored};
use crate::audit::Origin;
use crate::auth::Principal;
use crate::config::DatabaseTarget;
use crate::db::{self, write_tx, Database, DbConnection, Pool};
use crate::error::{AppError, AppResult};

/// Most submissions stored by one commit.
pub const MAX_GROUP: usize = 128;

struct Job {
    prepared: Prepared,
    who: Principal,
    origin: Origin,
    reply: oneshot::Sender<AppResult<Stored>>,
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
            .send(Job {
                prepared,
                who,
                origin,
                reply,
            })
            .await
            .map_err(|_| writer_gone())?;
        Ok(async move { answer.await.map_err(|_| writer_gone())? })
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
    let outcomes = writer.with(|conn| {
        let outcomes = write_tx(conn, |conn: &mut DbConnection| {
            let outcomes: Vec<AppResult<Stored>> = group
                .iter()
                .map(|job| conn.transaction(|c| store_unaudited(c, &job.who, &job.prepared)))
                .collect();
            // The audit rows last, once every case row the group touches is
            // locked (see `audit_received`).
            for (job, outcome) in group.iter().zip(&outcomes) {
                if let Ok(Stored::Created(receipt)) = outcome {
                    audit_received(conn, &job.who, &job.origin, &job.prepared, receipt)?;
                }
            }
            Ok::<_, AppError>(outcomes)
        })?;
        Ok(group
            .iter()
            .zip(outcomes)
            .map(|(job, outcome)| outcome.or_else(|err| settle_race(conn, &job.prepared, err)))
            .collect::<Vec<_>>())
    });
    match outcomes {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                // A client that went away learns the outcome when it retries.
                let _ = job.reply.send(outcome);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, size = group.len(), "a group commit failed");
            for job in group {
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
