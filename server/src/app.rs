//! The state every request shares (pool, caches, keys, the CPU pool, the
//! group committer) and the two ways handlers reach the database with it
//! (`db`, `audited`). The routes and middleware that use it are `http`'s.

use std::sync::Arc;

use actix_web::web;

use crate::audit::{self, Event, Origin};
use crate::auth::passwords::NewPassword;
use crate::auth::Principal;
use crate::config::Settings;
use crate::cpu::{CpuPool, Weight};
use crate::crypto::keys::KeyRing;
use crate::db::{write_tx, DbConnection, Pool};
use crate::error::AppResult;
use crate::forms::FormCache;
use crate::ingest::committer::Committer;
use crate::ingest::Limits;
use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub settings: Arc<Settings>,
    pub metrics: Metrics,
    pub forms: Arc<FormCache>,
    /// The XForms ODK uploads name, with their mappings (`ingest::odk`).
    pub odk_forms: Arc<crate::ingest::odk::OdkForms>,
    /// Programme private keys, unsealed on first use.
    pub keys: Arc<KeyRing>,
    /// The one writer that stores submissions in group commits.
    pub committer: Arc<Committer>,
    /// Where CPU-heavy work runs, bounded (`cpu`).
    pub cpu: Arc<CpuPool>,
    /// The console's background check of the audit chain.
    pub chain_check: Arc<crate::audit::ChainCheck>,
    /// The console's indicator reports counted lately (`indicators::recent`).
    pub recent_reports: Arc<crate::indicators::Recent>,
}

impl AppState {
    /// Runs database work on the blocking pool, off the async workers.
    pub async fn db<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await?
    }

    /// Runs CPU-heavy work that also reads the database (decryption,
    /// validation) on the bounded CPU pool, never on an HTTP worker: 503
    /// `server_busy` when it is full. `body_bytes` is the size of the input
    /// it works on (large inputs share half the pool).
    pub async fn cpu_db<T, F>(&self, body_bytes: usize, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<T> + Send + 'static,
    {
        self.cpu_db_as(Weight::of_bytes(body_bytes), work).await
    }

    /// As [`AppState::cpu_db`], for work heavy whatever its input (a report
    /// over every case of a programme).
    pub async fn heavy_db<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<T> + Send + 'static,
    {
        self.cpu_db_as(Weight::Heavy, work).await
    }

    async fn cpu_db_as<T, F>(&self, weight: Weight, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.cpu
            .run(weight, move || {
                let mut conn = pool.get()?;
                work(&mut conn)
            })
            .await
    }

    /// `chosen` (or a generated password) hashed on the CPU pool, before
    /// the write transaction that stores it.
    pub async fn hashed_password(&self, chosen: Option<String>) -> AppResult<NewPassword> {
        self.cpu
            .run(Weight::of_bytes(0), move || Ok(NewPassword::hashed(chosen)))
            .await
    }

    pub fn submission_limits(&self) -> Limits {
        Limits {
            max_attachment_bytes: self.settings.max_attachment_bytes,
            max_submission_bytes: self.settings.max_submission_bytes,
        }
    }
}

/// What a change did, for its audit row.
pub struct Audited {
    pub object_type: &'static str,
    pub object_id: String,
    pub detail: Option<String>,
    /// Why the actor did it, in their words (break-glass, identifying
    /// exports).
    pub purpose: Option<String>,
}

impl Audited {
    pub fn object(object_type: &'static str, object_id: impl Into<String>) -> Self {
        Audited {
            object_type,
            object_id: object_id.into(),
            detail: None,
            purpose: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }
}

impl AppState {
    /// Runs a change and the audit row of what it did in one write
    /// transaction, off the async workers: a change without its audit row
    /// cannot exist.
    pub async fn audited<T, F>(
        &self,
        origin: Origin,
        actor: Principal,
        action: &'static str,
        work: F,
    ) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<(T, Audited)> + Send + 'static,
    {
        self.read_audited(origin, actor, action, move |conn, _| {
            work(conn).map(|(value, what)| (value, Some(what)))
        })
        .await
    }

    /// Runs a read of case content (or a change) and its audit row together:
    /// what was read is on record, or nothing was read.
    pub async fn read_audited<T, F>(
        &self,
        origin: Origin,
        actor: Principal,
        action: &'static str,
        work: F,
    ) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, &Principal) -> AppResult<(T, Option<Audited>)>
            + Send
            + 'static,
    {
        self.db(move |conn| {
            write_tx(conn, |conn| {
                let (value, what) = work(conn, &actor)?;
                let mut event = Event::new(Some(&actor), action);
                if let Some(what) = &what {
                    event = event.object(what.object_type, &what.object_id);
                    if let Some(detail) = &what.detail {
                        event = event.detail(detail);
                    }
                    if let Some(purpose) = &what.purpose {
                        event = event.purpose(purpose);
                    }
                }
                audit::record(conn, &origin, event)?;
                Ok(value)
            })
        })
        .await
    }
}
