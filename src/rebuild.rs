//! Rebuilding an outlet's Redis state from the ledger: the latest checkpoint plus the ledger
//! after it. Start-up and in-service recovery (`OutletActor`) and `shelfsync rebuild` all
//! come through here.

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tracing::warn;

use crate::checkpoint::Checkpoints;
use crate::domain::{now_ms, OutletId};
use crate::ledger::{Ledger, Pace, Projection};
use crate::live_catalogue::LiveCatalogue;
use crate::settings::Settings;
use crate::store::{RedisStore, RestoreMode};

/// A projection and where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub projection: Projection,
    /// The seq of the checkpoint it started from, if any.
    pub checkpoint_seq: Option<u64>,
    /// Ledger documents folded after the checkpoint.
    pub folded: u64,
}

/// The outlet's projection at `to_seq` (or at the ledger's end): from the latest checkpoint
/// at or below it when `use_checkpoint`, else from the first document. A checkpoint that
/// cannot be read is logged and passed over: the ledger alone is always enough.
pub async fn load_projection(
    ledger: &Ledger,
    outlet: &OutletId,
    use_checkpoint: bool,
    to_seq: Option<u64>,
    pace: Pace,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Loaded> {
    let mut start = None;
    if use_checkpoint {
        match Checkpoints::new(ledger).latest(outlet).await {
            Ok(Some((head, p))) if to_seq.is_none_or(|to| head.seq <= to) => start = Some(p),
            Ok(_) => {}
            Err(e) => {
                warn!(%outlet, error = %format!("{e:#}"), "checkpoint unreadable; folding the whole ledger")
            }
        }
    }
    let checkpoint_seq = start.as_ref().map(|p| p.seq);
    let mut projection = start.unwrap_or_default();
    let mut folded = 0;
    ledger
        .fold_paced(outlet, &mut projection, to_seq, pace, |n| {
            folded += n;
            progress(n);
        })
        .await?;
    Ok(Loaded {
        projection,
        checkpoint_seq,
        folded,
    })
}

/// The node id the offline rebuild writes under.
const REBUILD_NODE: &str = "shelfsync-rebuild";

/// What one outlet's rebuild did.
#[derive(Debug)]
pub struct Rebuilt {
    pub outlet: OutletId,
    pub seq: u64,
    pub skus: usize,
    pub holds: usize,
    pub checkpoint_seq: Option<u64>,
    pub folded: u64,
    /// Whether Redis was written (it is left alone when it is ahead of the ledger).
    pub restored: bool,
    pub elapsed: Duration,
}

/// Rebuilds one outlet's Redis state from the ledger with `mode`. Retention comes from the
/// settings, as in the service.
pub async fn rebuild_outlet(
    settings: &Settings,
    store: &RedisStore,
    ledger: &Ledger,
    outlet: &OutletId,
    use_checkpoint: bool,
    mode: RestoreMode,
    progress: impl FnMut(u64),
) -> anyhow::Result<(Rebuilt, Projection)> {
    let started = Instant::now();
    let in_ledger = ledger.max_seq(outlet).await?;
    let loaded = load_projection(
        ledger,
        outlet,
        use_checkpoint,
        Some(in_ledger),
        Pace::FULL,
        progress,
    )
    .await?;
    let p = &loaded.projection;
    let plan = p.restore_plan(
        now_ms(),
        settings.reservations.retain_ms(),
        settings.movements.retain_ms(),
    )?;
    // The rebuild writes the outlet as its owner would: under a lease of its own, which a
    // running service holds instead (it is meant for a stopped service).
    let keys = store.keys(outlet);
    let lease_ms = settings.cluster.lease_ms;
    let Some(token) = store
        .acquire_lease(&keys, REBUILD_NODE, lease_ms, false)
        .await?
    else {
        let holder = store.lease_holder(&keys).await?.unwrap_or_default();
        anyhow::bail!(
            "outlet {outlet} is owned by a running process ({holder}); stop the service first \
             (a process killed without a stop holds its leases for cluster.lease_ms)"
        );
    };
    let restored = store
        .restore(outlet, &plan, mode, (REBUILD_NODE, token))
        .await;
    store.release_lease(&keys, REBUILD_NODE, token).await?;
    let restored = restored?;
    let rebuilt = Rebuilt {
        outlet: outlet.clone(),
        seq: p.seq,
        skus: p.counters.len(),
        holds: p.live_holds().count(),
        checkpoint_seq: loaded.checkpoint_seq,
        folded: loaded.folded,
        restored,
        elapsed: started.elapsed(),
    };
    Ok((rebuilt, loaded.projection))
}

/// `shelfsync rebuild`: rebuilds the outlets' Redis state from the ledger with a progress
/// bar, and saves a checkpoint where it folded any ledger, so the next rebuild starts there.
/// An outlet whose Redis state is ahead of the ledger is left alone (reported), so nothing
/// that is not yet in the ledger is ever lost; run it with the service stopped.
pub async fn run(
    settings: Settings,
    only: Option<OutletId>,
    use_checkpoint: bool,
) -> anyhow::Result<Vec<Rebuilt>> {
    let store = RedisStore::connect(&settings.redis).await?;
    let ledger = Ledger::connect(&settings.mongo).await?;
    // The CSV with the outlets added while running: their ledgers are rebuilt too.
    let catalogue = LiveCatalogue::load(&settings.catalogue, &ledger)
        .await?
        .now();
    let outlets: Vec<OutletId> = match only {
        Some(o) => {
            anyhow::ensure!(
                catalogue.outlets.iter().any(|x| x.id == o),
                "no outlet '{o}' in the catalogue"
            );
            vec![o]
        }
        None => catalogue.outlets.iter().map(|o| o.id.clone()).collect(),
    };
    let checkpoints = Checkpoints::new(&ledger);
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {pos:>8}/{len:8} documents {elapsed:>4} {msg}",
    )
    .context("progress style")?
    .progress_chars("=> ");
    let mut done = Vec::with_capacity(outlets.len());
    for outlet in &outlets {
        let in_ledger = ledger.max_seq(outlet).await?;
        let from = match use_checkpoint {
            true => checkpoints.head(outlet).await?.map_or(0, |h| h.seq),
            false => 0,
        };
        let bar = bars.add(ProgressBar::new(in_ledger.saturating_sub(from)));
        bar.set_style(style.clone());
        bar.set_prefix(outlet.to_string());
        let (rebuilt, mut p) = rebuild_outlet(
            &settings,
            &store,
            &ledger,
            outlet,
            use_checkpoint,
            RestoreMode::UnlessAhead,
            |n| bar.inc(n),
        )
        .await
        .with_context(|| format!("rebuilding {outlet}"))?;
        bar.finish_with_message(match rebuilt.restored {
            true => format!("seq {} in {:.2?}", rebuilt.seq, rebuilt.elapsed),
            false => "Redis is ahead of the ledger: left alone".to_string(),
        });
        if rebuilt.folded > 0 {
            p.prune(
                now_ms(),
                settings.reservations.retain_ms(),
                settings.movements.retain_ms(),
            );
            checkpoints.save(outlet, &p).await?;
        }
        done.push(rebuilt);
    }
    Ok(done)
}
