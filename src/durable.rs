//! Per-outlet durable-seq watermarks: the ledger writer raises them, confirms and movements
//! wait on them before they answer. Beside each, the outlet's ledger lag: how many of its
//! committed changes are not yet durable, and how old the oldest of them is. Admission of new
//! holds follows that age (`ledger.lag_max_secs`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::{now_ms, OutletId};

/// Commits this close together (ms) share one entry of the lag record, which bounds it to
/// about 100 entries a second whatever the rate of batches.
const LAG_RESOLUTION_MS: i64 = 10;

/// An outlet's ledger lag now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Changes committed in Redis and not yet durable in the ledger.
    pub entries: u64,
    /// Age of the oldest of them (0 when there is none).
    pub age_ms: i64,
}

/// What an outlet committed and the ledger does not have yet: the last seq committed, and
/// for each batch (coalesced within `LAG_RESOLUTION_MS`) its last seq and commit time,
/// oldest first. Entries at or below the durable watermark are dropped as it rises.
#[derive(Debug, Default)]
struct Commits {
    seq: u64,
    batches: VecDeque<(u64, i64)>,
}

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
    /// One slot per outlet; an outlet added while running gets its own (`add`).
    slots: RwLock<HashMap<OutletId, Arc<Slot>>>,
}

struct Slot {
    mark: watch::Sender<Mark>,
    // A std Mutex: nothing awaits while it is held.
    commits: Mutex<Commits>,
}

impl Slot {
    fn new(seq: u64) -> Arc<Self> {
        Arc::new(Self {
            mark: watch::channel(Mark { generation: 0, seq }).0,
            commits: Mutex::new(Commits {
                seq,
                batches: VecDeque::new(),
            }),
        })
    }

    fn commits(&self) -> std::sync::MutexGuard<'_, Commits> {
        self.commits.lock().expect("lag record")
    }
}

impl Durability {
    /// One watermark per outlet, starting at what the ledger already holds.
    pub fn new(start: impl IntoIterator<Item = (OutletId, u64)>) -> Self {
        let slots = (start.into_iter())
            .map(|(o, seq)| (o, Slot::new(seq)))
            .collect();
        Self {
            slots: RwLock::new(slots),
        }
    }

    /// A watermark for an outlet added while running, at what the ledger holds of it; one
    /// the outlet already has stays.
    pub fn add(&self, outlet: &OutletId, seq: u64) {
        let mut slots = self.slots.write().expect("durability lock");
        slots
            .entry(outlet.clone())
            .or_insert_with(|| Slot::new(seq));
    }

    fn slot(&self, outlet: &OutletId) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .expect("durability lock")
            .get(outlet)
            .cloned()
    }

    /// The outlet's actor committed changes up to `seq` at `at_ms` (the batch's time, which
    /// its ledger documents carry).
    pub fn committed(&self, outlet: &OutletId, seq: u64, at_ms: i64) {
        let Some(slot) = self.slot(outlet) else {
            return;
        };
        let durable = slot.mark.borrow().seq;
        let mut c = slot.commits();
        c.seq = c.seq.max(seq);
        if seq <= durable {
            return;
        }
        match c.batches.back_mut() {
            Some((last, at)) if at_ms - *at < LAG_RESOLUTION_MS => *last = (*last).max(seq),
            _ => c.batches.push_back((seq, at_ms)),
        }
    }

    /// The outlet's actor (re)loaded its state at `seq`. What it committed up to `seq` keeps
    /// its commit times (a reload within the process leaves Redis's outbox as it was); changes
    /// above everything known here came from before this process saw them (an outbox left by
    /// a restart), and their age counts from now. Entries past `seq` are gone (the state went
    /// back).
    pub fn loaded(&self, outlet: &OutletId, seq: u64) {
        let Some(slot) = self.slot(outlet) else {
            return;
        };
        let durable = slot.mark.borrow().seq;
        let mut c = slot.commits();
        c.seq = seq;
        let mut kept = VecDeque::with_capacity(c.batches.len());
        for &(last, at) in &c.batches {
            if last <= seq {
                kept.push_back((last, at));
            } else {
                // A batch that ran past `seq`: its first documents up to `seq` are still there.
                kept.push_back((seq, at));
                break;
            }
        }
        let known = kept.back().map_or(durable, |&(last, _)| last.max(durable));
        if seq > known {
            kept.push_back((seq, now_ms()));
        }
        c.batches = kept;
    }

    /// The outlet's ledger lag at `now_ms`.
    pub fn lag(&self, outlet: &OutletId, now_ms: i64) -> Lag {
        let Some(slot) = self.slot(outlet) else {
            return Lag::default();
        };
        let durable = slot.mark.borrow().seq;
        let c = slot.commits();
        let entries = c.seq.saturating_sub(durable);
        let age_ms = match c.batches.iter().find(|(last, _)| *last > durable) {
            Some((_, at)) if entries > 0 => (now_ms - at).max(0),
            _ => 0,
        };
        Lag { entries, age_ms }
    }

    /// Every outlet's lag at `now_ms`.
    pub fn lags(&self, now_ms: i64) -> Vec<(OutletId, Lag)> {
        let outlets: Vec<OutletId> = (self.slots.read().expect("durability lock"))
            .keys()
            .cloned()
            .collect();
        let mut all: Vec<_> = (outlets.into_iter())
            .map(|o| {
                let lag = self.lag(&o, now_ms);
                (o, lag)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn get(&self, outlet: &OutletId) -> u64 {
        self.slot(outlet).map_or(0, |s| s.mark.borrow().seq)
    }

    pub fn generation(&self, outlet: &OutletId) -> u64 {
        self.slot(outlet).map_or(0, |s| s.mark.borrow().generation)
    }

    /// The outlet's state went back: fails every waiter of the current generation that is
    /// not yet durable (its document may never be written; its seq will be reused).
    pub fn new_generation(&self, outlet: &OutletId) {
        if let Some(s) = self.slot(outlet) {
            s.mark.send_modify(|v| v.generation += 1);
        }
    }

    /// Raises the watermark; a lower value is ignored (watermarks never go back).
    pub fn advance(&self, outlet: &OutletId, seq: u64) {
        let Some(slot) = self.slot(outlet) else {
            return;
        };
        slot.mark.send_if_modified(|v| {
            let raise = seq > v.seq;
            if raise {
                v.seq = seq;
            }
            raise
        });
        let mut c = slot.commits();
        while c.batches.front().is_some_and(|(last, _)| *last <= seq) {
            c.batches.pop_front();
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
        let mut rx = self.slot(outlet).ok_or_else(not_durable)?.mark.subscribe();
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
mod lag_tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_change_not_yet_durable() {
        let o = OutletId::parse("o", "a").unwrap();
        let d = Durability::new([(o.clone(), 10)]);
        assert_eq!(d.lag(&o, 1_000), Lag::default());

        d.committed(&o, 12, 1_000);
        d.committed(&o, 15, 1_005);
        d.committed(&o, 20, 1_500);
        assert_eq!(
            d.lag(&o, 2_000),
            Lag {
                entries: 10,
                age_ms: 1_000
            },
            "seqs 11..=20; the oldest (11) was committed at 1,000"
        );

        d.advance(&o, 15);
        assert_eq!(
            d.lag(&o, 2_000),
            Lag {
                entries: 5,
                age_ms: 500
            },
            "16..=20, committed at 1,500"
        );

        d.advance(&o, 20);
        assert_eq!(d.lag(&o, 2_000), Lag::default());
    }

    #[test]
    fn a_load_above_the_watermark_counts_its_age_from_the_load() {
        let o = OutletId::parse("o", "a").unwrap();
        let d = Durability::new([(o.clone(), 3)]);
        let before = now_ms();

        d.loaded(&o, 8);

        let lag = d.lag(&o, before + 50);
        assert_eq!(lag.entries, 5);
        assert!((0..=50).contains(&lag.age_ms), "{lag:?}");
    }

    #[test]
    fn a_reload_within_the_process_keeps_the_age_of_what_is_not_yet_durable() {
        let o = OutletId::parse("o", "a").unwrap();
        let d = Durability::new([(o.clone(), 10)]);
        d.committed(&o, 12, 1_000);
        d.committed(&o, 15, 2_000);

        d.loaded(&o, 15);
        assert_eq!(d.lag(&o, 5_000).age_ms, 4_000, "still since 1,000");

        d.loaded(&o, 11);
        assert_eq!(
            d.lag(&o, 5_000),
            Lag {
                entries: 1,
                age_ms: 4_000
            },
            "the state went back to 11: seq 11 is of the batch committed at 1,000"
        );
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
