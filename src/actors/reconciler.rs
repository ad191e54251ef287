//! `Reconciler`: every `reconciler.interval_secs`, checks each outlet's Redis counters
//! against the ledger, exactly, at one seq.
//!
//! Per outlet: the outlet actor reads every counter and the seq in one script, in its
//! batch order (`Audit`); the reconciler waits until the ledger is durable to that seq,
//! brings its projection of the outlet to exactly that seq (it keeps one per outlet between
//! passes, so a pass folds only the new documents), and compares every SKU. Drift is
//! counted (`shelfsync_reconciler_drift_skus{outlet}`), logged with the SKUs and both
//! numbers, recorded in the `drift` collection, and, when `reconciler.heal`, corrected
//! through the outlet actor (`Heal`), so no request races the heal. After the comparison the
//! projection is saved as the outlet's checkpoint when the ledger has grown enough.
//!
//! Redis losing an outlet's state is not drift: the audit's batch finds the state missing
//! and the outlet rebuilds before it answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use mongodb::bson::doc;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use super::outlet::{Audit, Committed, Heal};
use super::{OutletActor, Shared};
use crate::checkpoint::Checkpoints;

use crate::domain::{now_ms, rfc3339_ms, Lot, LotDelta, OutletId, Sku};
use crate::ledger::{Pace, Projection};
use crate::settings::Settings;
use crate::store::{HealLine, Outcome};

/// Where drift is recorded.
pub const DRIFT: &str = "drift";

/// Runs one pass now and answers with its report (tests, operators).
#[derive(Message)]
#[rtype(result = "Result<PassReport, String>")]
pub struct RunPass;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// One SKU whose Redis counters or lots differ from the ledger's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkuDrift {
    pub sku: Sku,
    pub redis_on_hand: i64,
    pub redis_reserved: i64,
    pub ledger_on_hand: i64,
    pub ledger_reserved: i64,
    /// Both sides' lots, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lots: Option<LotDrift>,
}

/// A SKU's lots in Redis and in the ledger, earliest expiry first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LotDrift {
    pub redis: Vec<Lot>,
    pub ledger: Vec<Lot>,
}

impl LotDrift {
    /// The changes that take Redis's lots to the ledger's (each with the ledger's times).
    pub fn deltas(&self) -> Vec<LotDelta> {
        let mut deltas: Vec<LotDelta> = Vec::new();
        for l in &self.ledger {
            let r = self.redis.iter().find(|r| r.lot == l.lot);
            let (qty, held) = r.map_or((0, 0), |r| (r.qty, r.held));
            let times_differ =
                r.is_some_and(|r| (r.made_at, r.expires_at) != (l.made_at, l.expires_at));
            if (qty, held) != (l.qty, l.held) || times_differ {
                deltas.push(LotDelta {
                    lot: l.lot.clone(),
                    made_at: l.made_at,
                    expires_at: l.expires_at,
                    d_qty: l.qty - qty,
                    d_held: l.held - held,
                });
            }
        }
        for r in &self.redis {
            if !self.ledger.iter().any(|l| l.lot == r.lot) {
                deltas.push(LotDelta {
                    lot: r.lot.clone(),
                    made_at: r.made_at,
                    expires_at: r.expires_at,
                    d_qty: -r.qty,
                    d_held: -r.held,
                });
            }
        }
        deltas
    }
}

/// What a pass found at one outlet.
#[derive(Debug, Clone, Serialize)]
pub struct OutletReport {
    pub outlet: OutletId,
    pub seq: u64,
    pub skus: usize,
    pub drift: Vec<SkuDrift>,
    pub healed: bool,
    /// Why the outlet was not compared this pass, if it was not.
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub outlets: Vec<OutletReport>,
    pub elapsed_ms: u64,
}

impl PassReport {
    pub fn drifted_skus(&self) -> usize {
        self.outlets.iter().map(|o| o.drift.len()).sum()
    }
}

/// The pass's working state, shared by the actor and its pass futures.
struct Pass {
    shared: Shared,
    settings: Arc<Settings>,
    checkpoints: Checkpoints,
    /// Each outlet's projection as of the last pass, and the seq of its last checkpoint.
    projections: Mutex<HashMap<OutletId, (Projection, u64)>>,
}

pub struct Reconciler {
    pass: Arc<Pass>,
    running: bool,
    /// Set by `Stop`. A supervised actor is restarted when it stops while addresses to it
    /// live, so a stopped reconciler stays idle instead.
    stopped: bool,
}

impl Reconciler {
    pub fn new(shared: Shared, settings: Arc<Settings>) -> Self {
        let checkpoints = Checkpoints::new(&shared.ledger);
        Self {
            pass: Arc::new(Pass {
                shared,
                settings,
                checkpoints,
                projections: Mutex::new(HashMap::new()),
            }),
            running: false,
            stopped: false,
        }
    }
}

impl Actor for Reconciler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.stopped {
            return;
        }
        let every = Duration::from_secs(self.pass.settings.reconciler.interval_secs.max(1));
        ctx.run_interval(every, |act, ctx| {
            if act.running {
                return;
            }
            act.running = true;
            let pass = act.pass.clone();
            ctx.spawn(
                async move { pass.run().await }
                    .into_actor(act)
                    .map(|report, act, _| {
                        act.running = false;
                        if let Err(e) = report {
                            error!(error = %format!("{e:#}"), "reconciler pass failed");
                        }
                    }),
            );
        });
    }
}

impl Supervised for Reconciler {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.running = false;
    }
}

impl Handler<RunPass> for Reconciler {
    type Result = ResponseFuture<Result<PassReport, String>>;

    fn handle(&mut self, _: RunPass, _: &mut Self::Context) -> Self::Result {
        if self.stopped {
            return Box::pin(async { Err("the reconciler is stopped".to_string()) });
        }
        let pass = self.pass.clone();
        Box::pin(async move { pass.run().await.map_err(|e| format!("{e:#}")) })
    }
}

impl Handler<Stop> for Reconciler {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        self.stopped = true;
        ctx.stop();
    }
}

impl Pass {
    /// One pass over every outlet, one at a time (passes from the timer and from `RunPass`
    /// take turns on the projections).
    async fn run(&self) -> anyhow::Result<PassReport> {
        let started = Instant::now();
        let mut projections = self.projections.lock().await;
        // Only the outlets this process owns: each outlet's owner reconciles it.
        let ids = self.shared.owners.ids();
        projections.retain(|o, _| ids.contains(o));
        let mut outlets = Vec::with_capacity(ids.len());
        for outlet in &ids {
            let report = match self.outlet(outlet, &mut projections).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(%outlet, error = %format!("{e:#}"), "reconciler could not check the outlet");
                    self.shared
                        .metrics
                        .reconciler_skipped
                        .with_label_values(&[outlet.as_str()])
                        .inc();
                    OutletReport {
                        outlet: outlet.clone(),
                        seq: 0,
                        skus: 0,
                        drift: Vec::new(),
                        healed: false,
                        skipped: Some(format!("{e:#}")),
                    }
                }
            };
            outlets.push(report);
        }
        self.checkpoint_one(&mut projections).await;
        let elapsed = started.elapsed();
        self.shared
            .metrics
            .reconciler_pass_seconds
            .observe(elapsed.as_secs_f64());
        let report = PassReport {
            outlets,
            elapsed_ms: elapsed.as_millis() as u64,
        };
        info!(
            outlets = report.outlets.len(),
            drifted_skus = report.drifted_skus(),
            skipped = report
                .outlets
                .iter()
                .filter(|o| o.skipped.is_some())
                .count(),
            elapsed_ms = report.elapsed_ms,
            "reconciler pass"
        );
        Ok(report)
    }

    /// Writes the checkpoint of the outlet furthest past `reconciler.checkpoint_every_docs`
    /// since its last, if any (the next furthest when that write fails): one a pass, so that
    /// a pass never writes every outlet's checkpoint (each is the projection, megabytes late
    /// in a busy day) at once.
    async fn checkpoint_one(&self, projections: &mut HashMap<OutletId, (Projection, u64)>) {
        let every = self.settings.reconciler.checkpoint_every_docs.max(1);
        let mut due: Vec<_> = projections
            .iter_mut()
            .filter(|(o, (p, cp))| p.seq >= *cp + every && self.shared.owners.owns(o))
            .collect();
        due.sort_by_key(|(_, (p, cp))| std::cmp::Reverse(p.seq - *cp));
        // The next one when a write fails, so that one outlet whose checkpoint cannot be
        // written does not keep every other from theirs.
        for (outlet, (projection, checkpoint_seq)) in due {
            match self.checkpoints.save(outlet, projection).await {
                Ok(_) => {
                    *checkpoint_seq = projection.seq;
                    return;
                }
                Err(e) => {
                    warn!(%outlet, error = %format!("{e:#}"), "writing a checkpoint failed")
                }
            }
        }
    }

    async fn outlet(
        &self,
        outlet: &OutletId,
        projections: &mut HashMap<OutletId, (Projection, u64)>,
    ) -> anyhow::Result<OutletReport> {
        let addr = (self.shared.owners.get(outlet))
            .with_context(|| format!("outlet {outlet} is no longer owned here"))?;
        let Committed {
            outcome,
            generation,
            load,
        } = addr
            .send(Audit)
            .await
            .context("the outlet actor is gone")?
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let Outcome::Audit {
            seq,
            on_hand,
            reserved,
            lots,
        } = outcome
        else {
            anyhow::bail!("unexpected audit outcome {outcome:?}");
        };
        let wait = Duration::from_secs(self.settings.ledger.durable_wait_secs);
        self.shared
            .durable
            .wait(outlet, seq, generation, wait)
            .await?;
        let ledger = &self.shared.ledger;
        let (mut projection, checkpoint_seq) = match projections.remove(outlet) {
            Some((p, cp)) if p.seq <= seq => (p, cp),
            _ => {
                let loaded = crate::rebuild::load_projection(
                    ledger,
                    outlet,
                    true,
                    Some(seq),
                    Pace::BACKGROUND,
                    |_| {},
                )
                .await?;
                let cp = loaded.checkpoint_seq.unwrap_or(0);
                (loaded.projection, cp)
            }
        };
        // Paced: a pass folds everything the outlets wrote since the last one, and read flat
        // out that would hold up the ledger writer's inserts for seconds.
        ledger
            .fold_paced(outlet, &mut projection, Some(seq), Pace::BACKGROUND, |_| {})
            .await?;
        let drift = compare(&projection, &on_hand, &reserved, &lots);
        let metrics = &self.shared.metrics;
        metrics
            .reconciler_drift_skus
            .with_label_values(&[outlet.as_str()])
            .set(drift.len() as i64);
        let mut healed = false;
        if !drift.is_empty() {
            metrics
                .reconciler_drift
                .with_label_values(&[outlet.as_str()])
                .inc_by(drift.len() as u64);
            warn!(%outlet, seq, skus = %serde_json::to_string(&drift).unwrap_or_default(), "Redis drifted from the ledger");
            if self.settings.reconciler.heal {
                healed = self.heal(&addr, outlet, load, &drift).await;
            }
            if let Err(e) = self.record(outlet, seq, &drift, healed).await {
                // The metric and the log line above still carry it.
                error!(%outlet, seq, error = %format!("{e:#}"), "recording drift failed");
            }
        }
        let skus = on_hand
            .keys()
            .chain(projection.counters.keys())
            .collect::<BTreeSet<_>>()
            .len();
        let s = &self.settings;
        projection.prune(
            now_ms(),
            s.reservations.retain_ms(),
            s.movements.retain_ms(),
        );
        projections.insert(outlet.clone(), (projection, checkpoint_seq));
        Ok(OutletReport {
            outlet: outlet.clone(),
            seq,
            skus,
            drift,
            healed,
            skipped: None,
        })
    }

    async fn heal(
        &self,
        addr: &Addr<OutletActor>,
        outlet: &OutletId,
        load: u64,
        drift: &[SkuDrift],
    ) -> bool {
        let lines = drift
            .iter()
            .map(|d| HealLine {
                sku: d.sku.clone(),
                d_on_hand: d.ledger_on_hand - d.redis_on_hand,
                d_reserved: d.ledger_reserved - d.redis_reserved,
                lots: d.lots.as_ref().map(LotDrift::deltas).unwrap_or_default(),
            })
            .collect();
        match addr.send(Heal { load, lines }).await {
            Ok(Ok(_)) => {
                self.shared
                    .metrics
                    .reconciler_healed
                    .with_label_values(&[outlet.as_str()])
                    .inc_by(drift.len() as u64);
                info!(%outlet, skus = drift.len(), "drift healed: Redis set to the ledger's numbers");
                true
            }
            Ok(Err(e)) => {
                warn!(%outlet, reason = %e, "drift not healed this pass");
                false
            }
            Err(e) => {
                warn!(%outlet, error = %e, "drift not healed this pass");
                false
            }
        }
    }

    /// One `drift` document per outlet and audited seq; written again (same `_id`) if the
    /// same drift is found again at the same seq.
    async fn record(
        &self,
        outlet: &OutletId,
        seq: u64,
        drift: &[SkuDrift],
        healed: bool,
    ) -> anyhow::Result<()> {
        let at_ms = now_ms();
        let skus: Vec<_> = drift
            .iter()
            .map(|d| {
                let mut sku = doc! {
                    "sku": d.sku.as_str(),
                    "redis": {"on_hand": d.redis_on_hand, "reserved": d.redis_reserved},
                    "ledger": {"on_hand": d.ledger_on_hand, "reserved": d.ledger_reserved},
                };
                if let Some(lots) = &d.lots {
                    let lots = mongodb::bson::to_bson(lots).context("drifted lots")?;
                    sku.insert("lots", lots);
                }
                Ok(sku)
            })
            .collect::<anyhow::Result<_>>()?;
        let id = format!("{outlet}:{seq}");
        let record = doc! {
            "_id": &id,
            "outlet": outlet.as_str(),
            "seq": seq as i64,
            "at_ms": at_ms,
            "at": rfc3339_ms(at_ms),
            "skus": skus,
            "healed": healed,
        };
        self.shared
            .ledger
            .db
            .collection::<mongodb::bson::Document>(DRIFT)
            .replace_one(doc! {"_id": &id}, record)
            .upsert(true)
            .await
            .context("recording drift")?;
        Ok(())
    }
}

/// Every SKU either side knows, its counters and its lots compared exactly; a SKU missing on
/// one side counts as 0, with no lots.
pub(crate) fn compare(
    p: &Projection,
    on_hand: &BTreeMap<Sku, i64>,
    reserved: &BTreeMap<Sku, i64>,
    lots: &BTreeMap<Sku, Vec<Lot>>,
) -> Vec<SkuDrift> {
    let skus: BTreeSet<&Sku> = on_hand
        .keys()
        .chain(reserved.keys())
        .chain(p.counters.keys())
        .chain(lots.keys())
        .chain(p.lots.keys())
        .collect();
    skus.into_iter()
        .filter_map(|sku| {
            let ledger = p.counters.get(sku).copied().unwrap_or_default();
            // In the ledger's order: Redis's script breaks a tie of expiry by its own string
            // order, which is not Rust's under every locale.
            let mut redis = lots.get(sku).cloned().unwrap_or_default();
            Lot::sort(&mut redis);
            let ledger_lots = p.lots_of(sku);
            let d = SkuDrift {
                sku: sku.clone(),
                redis_on_hand: on_hand.get(sku).copied().unwrap_or(0),
                redis_reserved: reserved.get(sku).copied().unwrap_or(0),
                ledger_on_hand: ledger.on_hand,
                ledger_reserved: ledger.reserved,
                lots: (redis != ledger_lots).then_some(LotDrift {
                    redis,
                    ledger: ledger_lots,
                }),
            };
            let same = d.redis_on_hand == d.ledger_on_hand
                && d.redis_reserved == d.ledger_reserved
                && d.lots.is_none();
            (!same).then_some(d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Counters;

    fn sku(s: &str) -> Sku {
        Sku::parse("sku", s).unwrap()
    }

    #[test]
    fn compare_finds_every_differing_sku_on_either_side() {
        let mut p = Projection::default();
        let c = |on_hand, reserved| Counters {
            on_hand,
            reserved,
            seq: 1,
        };
        p.counters.insert(sku("A"), c(5, 1));
        p.counters.insert(sku("B"), c(3, 0));
        p.counters.insert(sku("C"), c(2, 0));
        let on_hand = BTreeMap::from([(sku("A"), 5), (sku("B"), 4), (sku("D"), 1)]);
        let reserved = BTreeMap::from([(sku("A"), 1), (sku("B"), 0), (sku("D"), 0)]);

        let drift = compare(&p, &on_hand, &reserved, &BTreeMap::new());

        let names: Vec<&str> = drift.iter().map(|d| d.sku.as_str()).collect();
        assert_eq!(names, ["B", "C", "D"]);
        assert_eq!((drift[0].redis_on_hand, drift[0].ledger_on_hand), (4, 3));
        assert_eq!((drift[1].redis_on_hand, drift[1].ledger_on_hand), (0, 2));
        assert_eq!((drift[2].redis_on_hand, drift[2].ledger_on_hand), (1, 0));
    }
}
