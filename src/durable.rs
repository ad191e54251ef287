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

pub struct Durability {
    marks: HashMap<OutletId, watch::Sender<u64>>,
}

impl Durability {
    /// One watermark per outlet, starting at what the ledger already holds.
    pub fn new(start: impl IntoIterator<Item = (OutletId, u64)>) -> Self {
        let marks = start
            .into_iter()
            .map(|(o, seq)| (o, watch::channel(seq).0))
            .collect();
        Self { marks }
    }

    pub fn get(&self, outlet: &OutletId) -> u64 {
        self.marks.get(outlet).map_or(0, |m| *m.borrow())
    }

    /// Raises the watermark; a lower value is ignored (watermarks never go back).
    pub fn advance(&self, outlet: &OutletId, seq: u64) {
        if let Some(m) = self.marks.get(outlet) {
            m.send_if_modified(|v| {
                let raise = seq > *v;
                if raise {
                    *v = seq;
                }
                raise
            });
        }
    }

    /// Waits until the outlet's ledger holds `seq`, at most `timeout`.
    pub async fn wait(
        &self,
        outlet: &OutletId,
        seq: u64,
        timeout: Duration,
    ) -> Result<(), NotDurable> {
        let not_durable = || NotDurable {
            outlet: outlet.clone(),
            seq,
        };
        let mut rx = self.marks.get(outlet).ok_or_else(not_durable)?.subscribe();
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|v| *v >= seq)).await,
            Ok(Ok(_))
        );
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
        assert!(d.wait(&o, 3, Duration::from_millis(1)).await.is_ok());
        assert!(d.wait(&o, 5, Duration::from_millis(20)).await.is_err());
        let d2 = d.clone();
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { d2.wait(&o2, 5, Duration::from_secs(5)).await });
        d.advance(&o, 4);
        d.advance(&o, 6);
        d.advance(&o, 2);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(d.get(&o), 6);
    }
}
