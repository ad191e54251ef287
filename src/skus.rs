//! The catalogue as it is now: the CSV files with the SKU edits made while running laid over
//! them.
//!
//! Edits come through `PUT /v1/skus/{sku}` (admin) and are versioned in MongoDB as zones are
//! (`zones.rs`): every change of a SKU inserts `sku_versions` `{_id: "{sku}:{version}", sku,
//! version, name, category, shelf_life_days, status, at_ms, by}` (never updated, so the history
//! stays) and then replaces the SKU's current row in `skus`. At start the service reads the
//! CSV and lays the current rows over it, each checked as a CSV row is; every process reads
//! the rows changed since its last look every `catalogue.refresh_ms`, so an edit made through
//! one process is seen by the others within that.
//!
//! Readers take the whole catalogue (`now`), an `Arc` swapped on each edit: a request sees
//! one version of it from start to end, and an edit is seen at once by every request, stream
//! filter and hold after it. Nothing else keeps a list of SKUs: the stock view, the streams,
//! the MQTT reseed and the reconciler go by the SKUs each outlet has stock records of, so a
//! new SKU appears in them with its first movement.

use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::Collection;

use crate::catalogue::{Catalogue, SkuInfo, SkuStatus};
use crate::domain::{now_ms, Invalid, Sku};
use crate::ledger::Ledger;

const CURRENT: &str = "skus";
const VERSIONS: &str = "sku_versions";
/// Rows changed this long before the last one seen are read again: a margin for the clocks
/// of several processes.
const CLOCK_MARGIN_MS: i64 = 10_000;
/// Every this many reads, every row is read (about a minute at `catalogue.refresh_ms` 1000).
const FULL_READ_EVERY: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SkuError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("sku {0} was changed at the same moment; read it and try again")]
    Raced(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

pub struct LiveCatalogue {
    now: RwLock<Arc<Catalogue>>,
    versions: Collection<Document>,
    current: Collection<Document>,
    /// The newest `at_ms` of the current rows read so far.
    seen_ms: Mutex<i64>,
    refreshes: std::sync::atomic::AtomicU64,
}

impl LiveCatalogue {
    /// `catalogue` as it is, edited through `ledger`'s database from now on.
    pub fn over(catalogue: Catalogue, ledger: &Ledger) -> Self {
        Self {
            now: RwLock::new(Arc::new(catalogue)),
            versions: ledger.beside(VERSIONS),
            current: ledger.beside(CURRENT),
            seen_ms: Mutex::new(i64::MIN),
            refreshes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The catalogue now; keep it for the length of one request.
    pub fn now(&self) -> Arc<Catalogue> {
        self.now.read().expect("catalogue lock").clone()
    }

    /// Reads the SKU rows changed since the last read (every row on every
    /// `FULL_READ_EVERY`th call, in case a row's time came from a clock far behind) and lays
    /// the newer versions over the catalogue in one swap. A row that does not pass the CSV's
    /// checks is left out loudly.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let since = *self.seen_ms.lock().expect("seen lock");
        let calls = self
            .refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let filter = if since == i64::MIN || calls % FULL_READ_EVERY == 0 {
            doc! {}
        } else {
            doc! {"at_ms": {"$gte": since.saturating_sub(CLOCK_MARGIN_MS)}}
        };
        let rows: Vec<Document> = self
            .current
            .find(filter)
            .await
            .context("reading SKU edits")?
            .try_collect()
            .await
            .context("reading SKU edits")?;
        let mut newest = since;
        let mut infos = Vec::with_capacity(rows.len());
        for d in rows {
            // A time ahead of this process's clock (another's clock) moves the mark no
            // further than now, so this process's next look still covers it.
            newest = newest.max(d.get_i64("at_ms").unwrap_or(i64::MIN).min(now_ms()));
            match info_from_doc(&d) {
                Ok(info) => infos.push(info),
                Err(e) => {
                    tracing::error!(sku = ?d.get("_id"), error = %format!("{e:#}"), "a SKU edit in MongoDB does not pass the catalogue's checks; ignored")
                }
            }
        }
        *self.seen_ms.lock().expect("seen lock") = newest;
        Ok(self.install(infos))
    }

    /// Serves each of `infos` unless the catalogue already has its version or a later one;
    /// one copy of the catalogue for all of them. How many were new.
    fn install(&self, infos: Vec<SkuInfo>) -> usize {
        let mut now = self.now.write().expect("catalogue lock");
        let fresh: Vec<SkuInfo> = infos
            .into_iter()
            .filter(|i| now.sku(&i.sku).is_none_or(|s| s.version < i.version))
            .collect();
        let n = fresh.len();
        if n > 0 {
            let mut next = (**now).clone();
            for info in fresh {
                next = next.with_sku(info);
            }
            *now = Arc::new(next);
        }
        n
    }

    /// Adds a SKU or sets its fields. The same fields again change nothing (same version); a
    /// change becomes the next version, written to MongoDB before it is served.
    pub async fn set(&self, edit: SkuInfo, by: &str) -> Result<SkuInfo, SkuError> {
        // What the other processes edited last, so that "the same fields" and the next
        // version are judged against the newest row, not this process's last look.
        self.refresh().await?;
        let current = self.now().sku(&edit.sku).cloned();
        if let Some(c) = current.as_ref().filter(|c| same_fields(c, &edit)) {
            return Ok(c.clone());
        }
        let info = edit.with_version(current.map_or(0, |c| c.version) + 1);
        let id = format!("{}:{}", info.sku, info.version);
        let at_ms = now_ms();
        let mut version = info_doc(&info);
        version.insert("_id", &id);
        version.insert("at_ms", at_ms);
        version.insert("by", by);
        if let Err(e) = self.versions.insert_one(version).await {
            let duplicate = matches!(e.kind.as_ref(), ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000);
            if !duplicate {
                return Err(anyhow::Error::new(e)
                    .context("writing a SKU version")
                    .into());
            }
            // The same version with the same fields is this very edit, retried after its
            // current row failed to write; anything else is a concurrent edit.
            let stored = self
                .versions
                .find_one(doc! {"_id": &id})
                .await
                .context("reading a SKU version")?;
            let same = stored
                .as_ref()
                .and_then(|d| info_from_doc(d).ok())
                .is_some_and(|s| same_fields(&s, &info));
            if !same {
                return Err(SkuError::Raced(info.sku.to_string()));
            }
        }
        let mut row = info_doc(&info);
        row.insert("_id", info.sku.as_str());
        row.insert("at_ms", at_ms);
        // Only over an older version: a late write of this version never undoes a newer one
        // (its upsert then collides with the newer row, which stands).
        let written = self
            .current
            .replace_one(
                doc! {"_id": info.sku.as_str(), "version": {"$lt": info.version as i64}},
                row,
            )
            .upsert(true)
            .await;
        if let Err(e) = written {
            let duplicate = matches!(e.kind.as_ref(), ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000);
            if !duplicate {
                return Err(anyhow::Error::new(e)
                    .context("writing the current SKU")
                    .into());
            }
        }
        self.install(vec![info.clone()]);
        Ok(info)
    }

    /// Every version of a SKU, oldest first (the CSV's own is not among them).
    pub async fn history(&self, sku: &Sku) -> anyhow::Result<Vec<Document>> {
        self.versions
            .find(doc! {"sku": sku.as_str()})
            .sort(doc! {"version": 1})
            .await
            .context("reading SKU versions")?
            .try_collect()
            .await
            .context("reading SKU versions")
    }
}

fn same_fields(a: &SkuInfo, b: &SkuInfo) -> bool {
    (&a.name, &a.category, a.shelf_life_days, a.status)
        == (&b.name, &b.category, b.shelf_life_days, b.status)
}

fn info_doc(s: &SkuInfo) -> Document {
    let status = match s.status {
        SkuStatus::Active => "active",
        SkuStatus::Retired => "retired",
    };
    doc! {
        "sku": s.sku.as_str(),
        "version": s.version as i64,
        "name": &s.name,
        "category": &s.category,
        "shelf_life_days": s.shelf_life_days.map(i64::from),
        "status": status,
    }
}

/// A stored row, through the same checks as a CSV row.
fn info_from_doc(d: &Document) -> anyhow::Result<SkuInfo> {
    let sku = Sku::parse("sku", d.get_str("sku")?)?;
    let status = match d.get_str("status")? {
        "active" => SkuStatus::Active,
        "retired" => SkuStatus::Retired,
        other => anyhow::bail!("unknown status '{other}'"),
    };
    let shelf_life_days = match d.get("shelf_life_days") {
        None | Some(mongodb::bson::Bson::Null) => None,
        Some(_) => Some(u32::try_from(d.get_i64("shelf_life_days")?)?),
    };
    let info = SkuInfo::new(
        sku,
        d.get_str("name")?,
        d.get_str("category")?,
        shelf_life_days,
        status,
    )?;
    Ok(info.with_version(u64::try_from(d.get_i64("version")?)?))
}
