//! Per-outlet durable-seq watermarks: the ledger writer raises them, confirms and movements
//! wait on them before they answer.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::OutletId;

#[derive(Debug, thiserror::Error)]
#[error("the ledger of {outlet} is not yet durable to seq {seq}")]
pub struct NotDurable {
    pub outlet: OutletId,
    pub seq: u64,
}

/// An outlet's watermark. The generation goes up when the outlet's Redis state went back
/// (rebuilt after a loss): seqs above the watermark are then given out again, so a waiter of
/// an older generation must not take a new document at its seq for its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    generation: u64,
    seq: u64,
}

pub struct Durability {
    marks: HashMap<OutletId, watch::Sender<Mark>>,
}

impl Durability {
    /// One watermark per outlet, starting at what the ledger already holds.
    pub fn new(start: impl IntoIterator<Item = (OutletId, u64)>) -> Self {
        let marks = start
            .into_iter()
            .map(|(o, seq)| (o, watch::channel(Mark { generation: 0, seq }).0))
            .collect();
        Self { marks }
    }

    pub fn get(&self, outlet: &OutletId) -> u64 {
        self.marks.get(outlet).map_or(0, |m| m.borrow().seq)
    }

    pub fn generation(&self, outlet: &OutletId) -> u64 {
        self.marks.get(outlet).map_or(0, |m| m.borrow().generation)
    }

    /// The outlet's state went back: fails every waiter of the current generation that is
    /// not yet durable (its document may never be written; its seq will be reused).
    pub fn new_generation(&self, outlet: &OutletId) {
        if let Some(m) = self.marks.get(outlet) {
            m.send_modify(|v| v.generation += 1);
        }
    }

    /// Raises the watermark; a lower value is ignored (watermarks never go back).
    pub fn advance(&self, outlet: &OutletId, seq: u64) {
        if let Some(m) = self.marks.get(outlet) {
            m.send_if_modified(|v| {
                let raise = seq > v.seq;
                if raise {
                    v.seq = seq;
                }
                raise
            });
        }
    }

    /// Waits until the outlet's ledger holds `seq` of `generation`, at most `timeout`.
    pub async fn wait(
        &self,
        outlet: &OutletId,
        seq: u64,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), NotDurable> {
        let not_durable = || NotDurable {
            outlet: outlet.clone(),
            seq,
        };
        let mut rx = self.marks.get(outlet).ok_or_else(not_durable)?.subscribe();
        let settled = |m: &Mark| m.generation != generation || m.seq >= seq;
        let reached = match tokio::time::timeout(timeout, rx.wait_for(settled)).await {
            Ok(Ok(m)) => m.generation == generation,
            _ => false,
        };
        if reached {
            Ok(())
        } else {
            Err(not_durable())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_watermark_passes_their_seq() {
        let o = OutletId::parse("o", "a").unwrap();
        let d = std::sync::Arc::new(Durability::new([(o.clone(), 3)]));
        assert!(d.wait(&o, 3, 0, Duration::from_millis(1)).await.is_ok());
        assert!(d.wait(&o, 5, 0, Duration::from_millis(20)).await.is_err());
        let d2 = d.clone();
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { d2.wait(&o2, 5, 0, Duration::from_secs(5)).await });
        d.advance(&o, 4);
        d.advance(&o, 6);
        d.advance(&o, 2);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(d.get(&o), 6);
    }
}

#[cfg(test)]
mod generation_tests {
    use super::*;

    #[tokio::test]
    async fn a_new_generation_fails_waiters_of_the_old_one() {
        let o = OutletId::parse("o", "a").unwrap();
        let d = std::sync::Arc::new(Durability::new([(o.clone(), 10)]));
        let (d2, o2) = (d.clone(), o.clone());
        let old = tokio::spawn(async move { d2.wait(&o2, 12, 0, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;

        d.new_generation(&o);
        d.advance(&o, 12);

        assert!(
            old.await.unwrap().is_err(),
            "seq 12 of the new generation is another document"
        );
        assert!(d.wait(&o, 12, 1, Duration::from_millis(1)).await.is_ok());
    }
}
