//! When the load's streams run: each operation sent at its intended time, bounded by the
//! shared in-flight slots.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::ops::Ctx;
use crate::stats::Stats;

/// When the load's streams run: from `start` for `secs`, sharing the in-flight slots.
#[derive(Clone)]
pub(crate) struct Schedule {
    pub(crate) start: Instant,
    pub(crate) secs: u64,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) stats: Stats,
}

impl Schedule {
    /// Sends operations `op` at `rate` per second (none when `rate` is 0), each at its
    /// intended time, in a task of their own; `f` gets the operation's number, its intended
    /// send time and its in-flight permit. The task answers with the operations still running.
    pub(crate) fn spawn<F, Fut>(
        &self,
        op: &'static str,
        rate: f64,
        f: F,
    ) -> tokio::task::JoinHandle<JoinSet<()>>
    where
        F: Fn(u64, Instant, OwnedSemaphorePermit) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let s = self.clone();
        let count = if rate > 0.0 {
            (rate * s.secs as f64).round() as u64
        } else {
            0
        };
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for i in 0..count {
                let intended = s.start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(intended.into()).await;
                s.stats.offered(op);
                match s.slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tasks.spawn(f(i, intended, permit));
                    }
                    Err(_) => s.stats.overload(op),
                }
                // Reap finished tasks as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            tasks
        })
    }
}

/// An operation of the run as `Schedule::spawn` calls it.
pub(crate) fn with_ctx<Fut: 'static>(
    ctx: &Arc<Ctx>,
    op: fn(Arc<Ctx>, u64, Instant, OwnedSemaphorePermit) -> Fut,
) -> impl Fn(u64, Instant, OwnedSemaphorePermit) -> Fut + Send + 'static {
    let ctx = ctx.clone();
    move |i, t, p| op(ctx.clone(), i, t, p)
}
