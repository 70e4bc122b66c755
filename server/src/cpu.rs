//! The bounded pool for CPU-heavy work: decrypting and validating
//! submissions, validating data for a form, rendering export pages. None of
//! it runs on the HTTP workers (they stay free for `/healthz`, logins and
//! reads), and none of it piles up on actix's blocking pool: at most
//! `cpu_workers` jobs run at once, at most `cpu_queue` more wait, and a
//! request gets its answer within `cpu_time_limit_secs` or a 503
//! `server_busy` with `Retry-After`, as it does when the queue is full.
//! Large jobs (a body over [`HEAVY_BYTES`], an export) share at most half
//! the workers, so an ordinary submission never queues behind a crowd of
//! megabyte ones.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::Settings;
use crate::error::{AppError, AppResult};

/// Seconds a refused client is asked to wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 2;

/// Bodies larger than this make a [`Weight::Heavy`] job.
pub const HEAVY_BYTES: usize = 256 * 1024;

/// How much a job may take: heavy jobs share half the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Light,
    Heavy,
}

impl Weight {
    /// The weight of work on a body of `bytes`.
    pub fn of_bytes(bytes: usize) -> Weight {
        if bytes > HEAVY_BYTES {
            Weight::Heavy
        } else {
            Weight::Light
        }
    }
}

#[derive(Clone)]
struct Permits {
    /// One per job running or waiting.
    admitted: Arc<Semaphore>,
    /// One per heavy job running or about to.
    heavy: Arc<Semaphore>,
    /// One per job running.
    running: Arc<Semaphore>,
}

pub struct CpuPool {
    permits: Permits,
    time_limit: Duration,
}

fn busy(why: &str) -> AppError {
    AppError::Busy {
        detail: why.to_string(),
        retry_after_secs: RETRY_AFTER_SECS,
    }
}

/// A job's hold on the pool: its admission and its running permits.
struct Hold {
    _admitted: OwnedSemaphorePermit,
    _heavy: Option<OwnedSemaphorePermit>,
    _running: OwnedSemaphorePermit,
}

impl Permits {
    /// Waits for the permits of a job that is already admitted.
    async fn run(
        &self,
        admitted: OwnedSemaphorePermit,
        weight: Weight,
    ) -> Result<Hold, tokio::sync::AcquireError> {
        let heavy = match weight {
            Weight::Heavy => Some(self.heavy.clone().acquire_owned().await?),
            Weight::Light => None,
        };
        Ok(Hold {
            _admitted: admitted,
            _heavy: heavy,
            _running: self.running.clone().acquire_owned().await?,
        })
    }
}

impl CpuPool {
    pub fn new(threads: usize, queue: usize, time_limit: Duration) -> CpuPool {
        let threads = threads.max(1);
        CpuPool {
            permits: Permits {
                admitted: Arc::new(Semaphore::new(threads + queue)),
                heavy: Arc::new(Semaphore::new((threads / 2).max(1))),
                running: Arc::new(Semaphore::new(threads)),
            },
            time_limit,
        }
    }

    pub fn from_settings(settings: &Settings) -> CpuPool {
        CpuPool::new(
            settings.cpu_threads(),
            settings.cpu_queue,
            Duration::from_secs(settings.cpu_time_limit_secs),
        )
    }

    /// Waits for a turn: refused at once when the queue is full, and when
    /// no job finished in time for this one to start.
    async fn enter(&self, weight: Weight, deadline: Instant) -> AppResult<Hold> {
        let admitted = self
            .permits
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                busy("every worker for this kind of work is busy and the queue is full")
            })?;
        tokio::time::timeout_at(deadline, self.permits.run(admitted, weight))
            .await
            .map_err(|_| busy("the request waited too long for a worker"))?
            .map_err(AppError::internal)
    }

    /// Runs `work` on a blocking thread once it is its turn, and answers
    /// within the time limit. Work past the limit finishes (it cannot be
    /// interrupted) and keeps its place until then, so the bound holds; its
    /// result is dropped.
    pub async fn run<T, F>(&self, weight: Weight, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> AppResult<T> + Send + 'static,
    {
        let deadline = Instant::now() + self.time_limit;
        let hold = self.enter(weight, deadline).await?;
        let job = actix_web::rt::task::spawn_blocking(move || {
            let _hold = hold;
            work()
        });
        match tokio::time::timeout_at(deadline, job).await {
            Ok(joined) => joined.map_err(|e| AppError::internal(format!("CPU job: {e}")))?,
            Err(_) => Err(busy("the request took longer than this server allows")),
        }
    }

    /// Starts `work` on a blocking thread once it is its turn, for work that
    /// streams its result (an export): heavy, it holds a slot while it
    /// computes and lets it go while it waits for the client ([`Slot::idle`]).
    pub async fn start<F>(&self, work: F) -> AppResult<()>
    where
        F: FnOnce(&mut Slot) + Send + 'static,
    {
        let deadline = Instant::now() + self.time_limit;
        let hold = self.enter(Weight::Heavy, deadline).await?;
        let mut slot = Slot {
            hold: Some(hold),
            permits: self.permits.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        actix_web::rt::task::spawn_blocking(move || work(&mut slot));
        Ok(())
    }
}

/// A streaming job's place in the pool.
pub struct Slot {
    hold: Option<Hold>,
    permits: Permits,
    runtime: tokio::runtime::Handle,
}

impl Slot {
    /// Runs `wait` (waiting for something other than the CPU) without
    /// holding the slot, then takes a slot again.
    pub fn idle<R>(&mut self, wait: impl FnOnce() -> R) -> R {
        self.hold = None;
        let outcome = wait();
        let permits = self.permits.clone();
        self.hold = self.runtime.block_on(async move {
            let admitted = permits.admitted.clone().acquire_owned().await.ok()?;
            permits.run(admitted, Weight::Heavy).await.ok()
        });
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_full_queue_is_refused_at_once_and_a_slow_job_in_time() {
        let pool = Arc::new(CpuPool::new(1, 1, Duration::from_millis(300)));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let holder = {
            let pool = pool.clone();
            actix_web::rt::spawn(async move {
                pool.run(Weight::Light, move || {
                    let _ = gate.lock().unwrap().recv();
                    Ok(1)
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting = {
            let pool = pool.clone();
            actix_web::rt::spawn(async move { pool.run(Weight::Light, || Ok(2)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One running, one waiting: a third is refused without waiting.
        let refused = pool.run(Weight::Light, || Ok(3)).await.unwrap_err();
        assert_eq!(refused.kind(), "server_busy");
        // The waiting one gives up at the time limit; the running one too.
        assert_eq!(waiting.await.unwrap().unwrap_err().kind(), "server_busy");
        assert_eq!(holder.await.unwrap().unwrap_err().kind(), "server_busy");
        release.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.run(Weight::Light, || Ok(4)).await.unwrap(), 4);
    }

    #[test]
    fn busy_is_a_503_server_busy_with_retry_after() {
        use actix_web::ResponseError;
        let response = busy("the queue is full").error_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(
            response.headers().get("retry-after").unwrap(),
            &RETRY_AFTER_SECS.to_string()
        );
        assert_eq!(
            busy("x").problem()["type"],
            "urn:casesync:problem:server_busy"
        );
    }
}
