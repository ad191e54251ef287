//! `shelfsync check`: a read-only audit of every outlet. It folds the outlet's whole ledger
//! from seq 1 (so any gap in the seqs shows), compares Redis with the ledger at Redis's own
//! seq, SKU by SKU, and checks the latest checkpoint against the ledger at its seq. It writes
//! nothing anywhere; the service may be running.

use std::collections::BTreeMap;

use crate::actors::reconciler::{compare, SkuDrift};
use crate::checkpoint::Checkpoints;
use crate::domain::{OutletId, Sku};
use crate::ledger::{Ledger, LedgerEntry, Projection};
use crate::live_catalogue::LiveCatalogue;
use crate::settings::Settings;
use crate::store::RedisStore;

/// What the audit found at one outlet.
#[derive(Debug)]
pub struct OutletCheck {
    pub outlet: OutletId,
    /// Ledger documents, and the seq up to which they run without a gap.
    pub ledger_docs: u64,
    pub ledger_seq: u64,
    pub redis_seq: Option<u64>,
    pub checkpoint_seq: Option<u64>,
    pub drift: Vec<SkuDrift>,
    pub problems: Vec<String>,
}

impl OutletCheck {
    pub fn clean(&self) -> bool {
        self.drift.is_empty() && self.problems.is_empty()
    }
}

/// Retention, for comparing what a checkpoint and the ledger would restore.
struct Retention {
    res_ms: i64,
    event_ms: i64,
}

pub async fn run(settings: &Settings) -> anyhow::Result<Vec<OutletCheck>> {
    let store = RedisStore::connect(&settings.redis).await?;
    let ledger = Ledger::connect(&settings.mongo).await?;
    // The CSV with the outlets added while running.
    let catalogue = LiveCatalogue::load(&settings.catalogue, &ledger)
        .await?
        .now();
    let checkpoints = Checkpoints::new(&ledger);
    let retention = Retention {
        res_ms: settings.reservations.retain_ms(),
        event_ms: settings.movements.retain_ms(),
    };
    let mut checks = Vec::with_capacity(catalogue.outlets.len());
    for outlet in catalogue.outlets.iter().map(|o| &o.id) {
        checks.push(check_outlet(&store, &ledger, &checkpoints, &retention, outlet).await?);
    }
    Ok(checks)
}

async fn check_outlet(
    store: &RedisStore,
    ledger: &Ledger,
    checkpoints: &Checkpoints,
    retention: &Retention,
    outlet: &OutletId,
) -> anyhow::Result<OutletCheck> {
    let keys = store.keys(outlet);
    let snapshot = store.snapshot(&keys).await?;
    let mut check = OutletCheck {
        outlet: outlet.clone(),
        ledger_docs: 0,
        ledger_seq: 0,
        redis_seq: snapshot.as_ref().map(|s| s.seq),
        checkpoint_seq: None,
        drift: Vec::new(),
        problems: Vec::new(),
    };
    let checkpoint = match checkpoints.latest(outlet).await {
        Ok(c) => c.map(|(_, p)| p),
        Err(e) => {
            check.problems.push(format!("checkpoint unreadable: {e:#}"));
            None
        }
    };
    check.checkpoint_seq = checkpoint.as_ref().map(|p| p.seq);

    // Fold from seq 1, stopping at the checkpoint's seq and at Redis's seq to compare there.
    let mut stops: Vec<u64> = check
        .checkpoint_seq
        .into_iter()
        .chain(check.redis_seq)
        .collect();
    stops.sort_unstable();
    let mut p = Projection::default();
    for stop in stops {
        if ledger
            .fold(outlet, &mut p, Some(stop), |_| {})
            .await
            .is_err()
        {
            break;
        }
        if let Some(cp) = checkpoint.as_ref().filter(|cp| cp.seq == stop) {
            compare_checkpoint(cp, &p, retention, &mut check.problems);
        }
    }
    // Documents past the contiguous run are a gap, unless a running service wrote them
    // after the fold looked: fold again before calling it one.
    let mut beyond = 0;
    for _ in 0..3 {
        let folded = ledger.fold(outlet, &mut p, None, |_| {}).await;
        beyond = ledger.count(outlet, Some(p.seq)).await?;
        match folded {
            Err(e) if beyond == 0 => {
                check
                    .problems
                    .push(format!("the ledger does not fold: {e:#}"));
                break;
            }
            // A jump in the seqs: the gap is reported below.
            Err(_) => break,
            Ok(()) if beyond == 0 => break,
            Ok(()) => {}
        }
    }
    check.ledger_seq = p.seq;
    check.ledger_docs = p.seq + beyond;
    if beyond > 0 {
        check.problems.push(format!(
            "the ledger's seqs run without a gap only to {}: seq {} is missing ({beyond} documents after it)",
            p.seq,
            p.seq + 1
        ));
    }
    if let Some(cp) = check.checkpoint_seq.filter(|&s| s > p.seq && beyond == 0) {
        check.problems.push(format!(
            "the checkpoint is at seq {cp}, past the ledger's {}",
            p.seq
        ));
    }

    let Some(snapshot) = snapshot else {
        if p.seq > 0 {
            check.problems.push(
                "Redis has no state for the outlet (the service rebuilds it on start; or run `shelfsync rebuild`)"
                    .into(),
            );
        }
        return Ok(check);
    };
    let at_redis = match snapshot.seq.cmp(&p.seq) {
        std::cmp::Ordering::Equal => Some(p),
        std::cmp::Ordering::Less => {
            let mut at = Projection::default();
            ledger
                .fold(outlet, &mut at, Some(snapshot.seq), |_| {})
                .await?;
            Some(at)
        }
        // Redis is ahead: the rest must still be in the outbox (not yet written).
        // Redis is ahead: the rest is still in the outbox, or was written since the fold.
        std::cmp::Ordering::Greater => {
            match with_outbox(store, outlet, p.clone(), snapshot.seq).await? {
                Some(at) => Some(at),
                None => {
                    let mut at = p;
                    let folded = ledger.fold(outlet, &mut at, Some(snapshot.seq), |_| {});
                    folded.await.is_ok().then_some(at)
                }
            }
        }
    };
    let Some(at_redis) = at_redis else {
        check.problems.push(format!(
            "Redis is at seq {} but the ledger ends at {} and the outbox does not hold the rest",
            snapshot.seq, check.ledger_seq
        ));
        return Ok(check);
    };
    if snapshot.seq < check.ledger_seq {
        check.problems.push(format!(
            "Redis is at seq {}, behind the ledger's {} (the service rebuilds it on its next write)",
            snapshot.seq, check.ledger_seq
        ));
    }
    let on_hand: BTreeMap<Sku, i64> = snapshot
        .counters
        .iter()
        .map(|(s, c)| (s.clone(), c.on_hand))
        .collect();
    let reserved: BTreeMap<Sku, i64> = snapshot
        .counters
        .iter()
        .map(|(s, c)| (s.clone(), c.reserved))
        .collect();
    check.drift = compare(&at_redis, &on_hand, &reserved, &snapshot.lots);
    let mut redis_holds: Vec<_> = snapshot.held.iter().map(|r| r.id.clone()).collect();
    let mut ledger_holds: Vec<_> = at_redis.live_holds().map(|r| r.id.clone()).collect();
    redis_holds.sort();
    ledger_holds.sort();
    if redis_holds != ledger_holds {
        check.problems.push(format!(
            "live holds differ: Redis has {}, the ledger {}",
            redis_holds.len(),
            ledger_holds.len()
        ));
    }
    Ok(check)
}

/// The ledger's projection `p` carried to `seq` with the outbox entries after it, if the
/// outbox still holds all of them.
async fn with_outbox(
    store: &RedisStore,
    outlet: &OutletId,
    mut p: Projection,
    seq: u64,
) -> anyhow::Result<Option<Projection>> {
    let want = (seq - p.seq) as usize;
    let (entries, _) = store.read_outbox(&store.keys(outlet), p.seq, want).await?;
    for e in entries.iter().filter(|e| e.seq <= seq) {
        if p.apply(&LedgerEntry::from_outbox(&e.json)?).is_err() {
            return Ok(None);
        }
    }
    Ok((p.seq == seq).then_some(p))
}

fn compare_checkpoint(
    cp: &Projection,
    ledger: &Projection,
    retention: &Retention,
    problems: &mut Vec<String>,
) {
    if cp.counters != ledger.counters {
        let differing = ledger
            .counters
            .iter()
            .filter(|(sku, c)| cp.counters.get(*sku) != Some(c))
            .count()
            + cp.counters
                .keys()
                .filter(|sku| !ledger.counters.contains_key(*sku))
                .count();
        problems.push(format!(
            "checkpoint at seq {} differs from the ledger in {differing} SKUs",
            cp.seq
        ));
    }
    // Everything a rebuild from it would restore: live holds, and the reservations,
    // Idempotency-Keys and event ids inside their retention.
    let now = crate::domain::now_ms();
    let plan = |p: &Projection| {
        p.restore_plan(now, retention.res_ms, retention.event_ms)
            .ok()
    };
    if plan(cp) != plan(ledger) {
        problems.push(format!(
            "checkpoint at seq {} would restore other holds or replay records than the ledger",
            cp.seq
        ));
    }
}
