//! `shelfsync import`: opening stock as `count` movements, so the ledger alone explains
//! every number. Outlets whose ledger already has history are left alone unless forced;
//! event ids derive from the stock file's digest and row, so a re-run is a replay.

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use futures_util::{stream, StreamExt};

use crate::actors::outlet::ApplyMovement;
use crate::app::Core;
use crate::domain::{digest, now_ms, LedgerKind, OutletId};
use crate::settings::Settings;
use crate::store::Outcome;

/// Import requests in flight at once; the outlet actors batch them.
const IN_FLIGHT_MAX: usize = 256;

#[derive(Debug, Default)]
pub struct ImportReport {
    pub applied: usize,
    pub replayed: usize,
    pub skipped_outlets: BTreeSet<OutletId>,
}

pub async fn run(settings: Settings, force: bool) -> anyhow::Result<ImportReport> {
    let core = Core::start(settings).await?;
    let result = import(&core, force).await;
    core.shutdown().await?;
    result
}

async fn import(core: &Core, force: bool) -> anyhow::Result<ImportReport> {
    let services = &core.services;
    let path = &services.settings.catalogue.stock_file;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file_tag = digest(&bytes)[..12].to_owned();
    let rows = services.catalogue.now().load_stock(path)?;
    let mut report = ImportReport::default();
    let mut todo = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        if !force && services.shared.durable.get(&row.outlet) > 0 {
            report.skipped_outlets.insert(row.outlet);
        } else {
            todo.push((i, row));
        }
    }
    let at = now_ms();
    let mut outcomes = stream::iter(todo)
        .map(|(i, row)| {
            let key = format!("import-{file_tag}-{i}");
            let msg = ApplyMovement {
                hash: digest(format!("{}|{}|{}", row.outlet, row.sku, row.qty).as_bytes()),
                kind: LedgerKind::Count,
                sku: row.sku,
                qty: row.qty,
                event_id: key.clone(),
                key,
                event_at_ms: at,
                note: Some("opening stock".into()),
                counterpart: None,
                lot: None,
                lots: Vec::new(),
                by: "import".into(),
            };
            let addr = services.outlet(&row.outlet);
            async move {
                let sent = match addr {
                    Ok(addr) => addr.send(msg).await.map_err(anyhow::Error::from),
                    Err(e) => Err(anyhow::Error::new(e)),
                };
                (row.outlet, sent)
            }
        })
        .buffer_unordered(IN_FLIGHT_MAX);
    while let Some((outlet, outcome)) = outcomes.next().await {
        let committed = outcome
            .context("outlet actor")?
            .map_err(|e| anyhow::anyhow!("{outlet}: {e}"))?;
        match committed.outcome {
            Outcome::Ok { .. } => report.applied += 1,
            Outcome::Replay { .. } => report.replayed += 1,
            other => bail!("{outlet}: opening stock refused: {other:?}"),
        }
    }
    Ok(report)
}
