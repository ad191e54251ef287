//! The catalogue as it is now: the CSV files with the SKU and outlet edits made while running
//! laid over them.
//!
//! Edits come through `PUT /v1/skus/{sku}` and `PUT /v1/outlets/{outlet}` (admin) and are
//! versioned in MongoDB as zones are (`zones.rs`): every change inserts a version row
//! (`sku_versions` `{_id: "{sku}:{version}", sku, version, name, category, shelf_life_days,
//! status, at_ms, by}`, `outlet_versions` `{_id: "{outlet}:{version}", outlet, version, name,
//! city, kind, at_ms, by}`; never updated, so the history stays) and then replaces the current
//! row (`skus`, `outlets`). At start the service reads the CSV and lays the current rows over
//! it, each checked as a CSV row is; every process reads the rows changed since its last look
//! every `catalogue.refresh_ms`, so an edit made through one process is seen by the others
//! within that.
//!
//! Readers take the whole catalogue (`now`), an `Arc` swapped on each edit: a request sees
//! one version of it from start to end, and an edit is seen at once by every request, stream
//! filter and hold after it. Nothing else keeps a list of SKUs: the stock view, the streams,
//! the MQTT reseed and the reconciler go by the SKUs each outlet has stock records of, so a
//! new SKU appears in them with its first movement. A new outlet is more: the process gives
//! it its place in every per-outlet structure and takes its lease when rendezvous gives it
//! (`Services::grow`), on the edit in the process that made it and on the next refresh in
//! the others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::Collection;

use crate::catalogue::{Catalogue, Outlet, OutletKind, SkuInfo, SkuStatus};
use crate::domain::{now_ms, Invalid, OutletId, Sku};
use crate::ledger::Ledger;
use crate::settings::CatalogueSettings;

/// Rows changed this long before the last one seen are read again: a margin for the clocks
/// of several processes.
const CLOCK_MARGIN_MS: i64 = 10_000;
/// Every this many reads, every row is read (about a minute at `catalogue.refresh_ms` 1000).
const FULL_READ_EVERY: u64 = 60;
/// A version row this old that never became current was abandoned by its writer (a live
/// edit writes its current row milliseconds after its version row).
const ABANDONED_AFTER_MS: i64 = 30_000;
/// At most this many abandoned versions are passed over by one edit.
const ABANDONED_SKIPS_MAX: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("'{0}' was changed at the same moment; read it and try again")]
    Raced(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What is edited while running and kept in versions: a SKU, an outlet, a delivery zone.
pub trait Versioned: Clone + Sized {
    /// The collections of current rows and of versions.
    const CURRENT: &'static str;
    const VERSIONS: &'static str;
    /// The name of the id field in both.
    const KEY: &'static str;
    fn key(&self) -> &str;
    fn version(&self) -> u64;
    fn with_version(self, version: u64) -> Self;
    /// The fields an edit sets (not the version).
    fn same_fields(&self, other: &Self) -> bool;
    /// The fields and the version, with the id under `KEY`.
    fn to_doc(&self) -> Document;
    /// A stored row, through the same checks as a CSV row.
    fn from_doc(d: &Document) -> anyhow::Result<Self>;
}

/// What the catalogue keeps versions of: a SKU or an outlet.
pub trait Entry: Versioned {
    /// Whether `self` may become `next` (an edit may be refused whatever it sets).
    fn may_become(&self, _next: &Self) -> Result<(), Invalid> {
        Ok(())
    }
    fn in_catalogue<'a>(catalogue: &'a Catalogue, key: &str) -> Option<&'a Self>;
    fn put(catalogue: Catalogue, entry: Self) -> Catalogue;
}

/// One kind of entry's rows in MongoDB: the changed rows read since the last look, and an
/// edit written as a version and then as the current row.
pub struct Edits<T> {
    versions: Collection<Document>,
    current: Collection<Document>,
    /// The newest `at_ms` of the current rows read so far.
    seen_ms: Mutex<i64>,
    reads: AtomicU64,
    kind: std::marker::PhantomData<T>,
}

impl<T: Versioned> Edits<T> {
    pub fn new(ledger: &Ledger) -> Self {
        Self {
            versions: ledger.beside(T::VERSIONS),
            current: ledger.beside(T::CURRENT),
            seen_ms: Mutex::new(i64::MIN),
            reads: AtomicU64::new(0),
            kind: std::marker::PhantomData,
        }
    }

    /// The rows changed since the last read (every row on every `FULL_READ_EVERY`th call, in
    /// case a row's time came from a clock far behind). A row that does not pass the CSV's
    /// checks is left out loudly.
    pub async fn changed(&self) -> anyhow::Result<Vec<T>> {
        let since = *self.seen_ms.lock().expect("seen lock");
        let reads = self.reads.fetch_add(1, Ordering::Relaxed);
        let filter = if since == i64::MIN || reads % FULL_READ_EVERY == 0 {
            doc! {}
        } else {
            doc! {"at_ms": {"$gte": since.saturating_sub(CLOCK_MARGIN_MS)}}
        };
        let what = T::CURRENT;
        let rows: Vec<Document> = (self.current.find(filter).await)
            .with_context(|| format!("reading the {what} edits"))?
            .try_collect()
            .await
            .with_context(|| format!("reading the {what} edits"))?;
        let mut newest = since;
        let mut entries = Vec::with_capacity(rows.len());
        for d in rows {
            // A time ahead of this process's clock (another's clock) moves the mark no
            // further than now, so this process's next look still covers it.
            newest = newest.max(d.get_i64("at_ms").unwrap_or(i64::MIN).min(now_ms()));
            match T::from_doc(&d) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    tracing::error!(what, id = ?d.get("_id"), error = %format!("{e:#}"), "an edit in MongoDB does not pass the catalogue's checks; ignored")
                }
            }
        }
        *self.seen_ms.lock().expect("seen lock") = newest;
        Ok(entries)
    }

    /// Writes `entry` (already the next version) as a version row, then as the current row;
    /// the entry as written. A version number held by an abandoned edit (its version row
    /// written over `ABANDONED_AFTER_MS` ago and never made current: its writer failed between
    /// the two writes) is passed over: the edit takes the next number, and the abandoned row
    /// stays in the history.
    pub async fn write(&self, entry: T, by: &str) -> Result<T, EditError> {
        let mut entry = entry;
        let at_ms = now_ms();
        let mut skipped = 0;
        loop {
            let id = format!("{}:{}", entry.key(), entry.version());
            let mut version = entry.to_doc();
            version.insert("_id", &id);
            version.insert("at_ms", at_ms);
            version.insert("by", by);
            let Err(e) = self.versions.insert_one(version).await else {
                break;
            };
            if !duplicate_key(&e) {
                return Err(anyhow::Error::new(e).context("writing a version").into());
            }
            // The same version with the same fields is this very edit, retried after its
            // current row failed to write; anything else is a concurrent edit, or an
            // abandoned one.
            let stored =
                (self.versions.find_one(doc! {"_id": &id}).await).context("reading a version")?;
            let same = (stored.as_ref())
                .and_then(|d| T::from_doc(d).ok())
                .is_some_and(|s| s.same_fields(&entry));
            if same {
                break;
            }
            let stored_at = (stored.as_ref()).and_then(|d| d.get_i64("at_ms").ok());
            let current = (self.current.find_one(doc! {"_id": entry.key()}).await)
                .context("reading the current row")?;
            let current_version = (current.as_ref())
                .and_then(|d| d.get_i64("version").ok())
                .unwrap_or(0);
            let abandoned = current_version < entry.version() as i64
                && stored_at.is_some_and(|t| at_ms - t > ABANDONED_AFTER_MS);
            if !abandoned || skipped == ABANDONED_SKIPS_MAX {
                return Err(EditError::Raced(entry.key().to_owned()));
            }
            tracing::warn!(
                id,
                "an abandoned edit holds this version; the edit takes the next"
            );
            skipped += 1;
            let next = entry.version() + 1;
            entry = entry.with_version(next);
        }
        let mut row = entry.to_doc();
        row.insert("_id", entry.key());
        row.insert("at_ms", at_ms);
        // Only over an older version: a late write of this version never undoes a newer one
        // (its upsert then collides with the newer row, which stands).
        let written = self
            .current
            .replace_one(
                doc! {"_id": entry.key(), "version": {"$lt": entry.version() as i64}},
                row,
            )
            .upsert(true)
            .await;
        match written {
            Err(e) if !duplicate_key(&e) => Err(anyhow::Error::new(e)
                .context("writing the current row")
                .into()),
            _ => Ok(entry),
        }
    }

    /// Every version of an entry, oldest first (the CSV's own is not among them).
    async fn history(&self, key: &str) -> anyhow::Result<Vec<Document>> {
        (self.versions.find(doc! {T::KEY: key}))
            .sort(doc! {"version": 1})
            .await
            .context("reading versions")?
            .try_collect()
            .await
            .context("reading versions")
    }
}

fn duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000)
}

pub struct LiveCatalogue {
    now: RwLock<Arc<Catalogue>>,
    skus: Edits<SkuInfo>,
    outlets: Edits<Outlet>,
    /// Woken when an outlet is added (by an edit here or a refresh), for `Services::grow`.
    pub outlet_added: tokio::sync::Notify,
    /// One outlet edit at a time in this process, so that `catalogue.outlets_max` holds
    /// against concurrent additions here.
    outlet_edits: tokio::sync::Mutex<()>,
    /// When the latest read of the edits that ended began.
    read_started: Mutex<std::time::Instant>,
    /// One read at a time for `has_outlet_since`.
    unknown_reads: tokio::sync::Mutex<()>,
}

impl LiveCatalogue {
    /// `catalogue` as it is, edited through `ledger`'s database from now on.
    pub fn over(catalogue: Catalogue, ledger: &Ledger) -> Self {
        Self {
            now: RwLock::new(Arc::new(catalogue)),
            skus: Edits::new(ledger),
            outlets: Edits::new(ledger),
            outlet_added: tokio::sync::Notify::new(),
            outlet_edits: tokio::sync::Mutex::new(()),
            read_started: Mutex::new(std::time::Instant::now()),
            unknown_reads: tokio::sync::Mutex::new(()),
        }
    }

    /// The CSV files with every edit laid over them: what the service starts from, and what
    /// the offline tools (`rebuild`, `audit`) go by.
    pub async fn load(settings: &CatalogueSettings, ledger: &Ledger) -> anyhow::Result<Self> {
        let live = Self::over(Catalogue::load(settings)?, ledger);
        live.refresh()
            .await
            .context("reading the catalogue edits")?;
        Ok(live)
    }

    /// The catalogue now; keep it for the length of one request.
    pub fn now(&self) -> Arc<Catalogue> {
        self.now.read().expect("catalogue lock").clone()
    }

    /// Reads the outlet and SKU rows changed since the last read and lays the newer versions
    /// over the catalogue in one swap. How many were new.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let started = std::time::Instant::now();
        // Each kind is installed as soon as it is read: its mark has moved past its rows.
        let outlets = self.install(self.outlets.changed().await?);
        let skus = self.install(self.skus.changed().await?);
        let mut read = self.read_started.lock().expect("read lock");
        *read = (*read).max(started);
        Ok(outlets + skus)
    }

    /// Whether the catalogue has `outlet` as of a read begun after `since` (when a message
    /// naming it arrived): an outlet just added through another process is then seen. When
    /// the catalogue does not have it, reads the edits unless a read begun after `since` has
    /// already ended. One such read at a time: a flood of unknown ids shares reads.
    pub async fn has_outlet_since(&self, outlet: &OutletId, since: std::time::Instant) -> bool {
        if self.now().outlet(outlet).is_some() {
            return true;
        }
        let _one = self.unknown_reads.lock().await;
        let read_since = *self.read_started.lock().expect("read lock") >= since;
        if !read_since {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %format!("{e:#}"), "reading catalogue edits failed");
            }
        }
        self.now().outlet(outlet).is_some()
    }

    /// Serves each of `entries` unless the catalogue already has its version or a later one;
    /// one copy of the catalogue for all of them. How many were new.
    fn install<T: Entry>(&self, entries: Vec<T>) -> usize {
        let mut now = self.now.write().expect("catalogue lock");
        let fresh: Vec<T> = (entries.into_iter())
            .filter(|e| T::in_catalogue(&now, e.key()).is_none_or(|c| c.version() < e.version()))
            .collect();
        let n = fresh.len();
        if n > 0 {
            let outlets = now.outlets.len();
            let next = (fresh.into_iter()).fold((**now).clone(), T::put);
            if next.outlets.len() > outlets {
                self.outlet_added.notify_one();
            }
            *now = Arc::new(next);
        }
        n
    }

    /// Adds a SKU or sets its fields (see `set`).
    pub async fn set_sku(&self, edit: SkuInfo, by: &str) -> Result<SkuInfo, EditError> {
        self.set(&self.skus, edit, by, |_| Ok(())).await
    }

    /// Adds an outlet, while the catalogue has fewer than `outlets_max`, or sets its name
    /// and city (its kind stays what it was made as).
    pub async fn set_outlet(
        &self,
        edit: Outlet,
        by: &str,
        outlets_max: usize,
    ) -> Result<Outlet, EditError> {
        let _one = self.outlet_edits.lock().await;
        let id = edit.id.clone();
        let room = |now: &Catalogue| {
            if now.outlet(&id).is_none() && now.outlets.len() >= outlets_max {
                return Err(Invalid::new(
                    "outlet",
                    format!(
                        "the catalogue has {} outlets and kitchens, as many as \
                         catalogue.outlets_max allows; nothing was added",
                        now.outlets.len()
                    ),
                ));
            }
            Ok(())
        };
        self.set(&self.outlets, edit, by, room).await
    }

    /// The same fields again change nothing (same version); a change becomes the next
    /// version, written to MongoDB before it is served. `admit` may refuse the edit against
    /// the catalogue as it is after reading the newest edits.
    async fn set<T: Entry>(
        &self,
        edits: &Edits<T>,
        edit: T,
        by: &str,
        admit: impl FnOnce(&Catalogue) -> Result<(), Invalid>,
    ) -> Result<T, EditError> {
        // What the other processes edited last, so that "the same fields" and the next
        // version are judged against the newest row, not this process's last look.
        self.refresh().await?;
        let now = self.now();
        admit(&now)?;
        let current = T::in_catalogue(&now, edit.key()).cloned();
        if let Some(c) = &current {
            if c.same_fields(&edit) {
                return Ok(c.clone());
            }
            c.may_become(&edit)?;
        }
        let entry = edit.with_version(current.map_or(0, |c| c.version()) + 1);
        let entry = edits.write(entry, by).await?;
        self.install(vec![entry.clone()]);
        Ok(entry)
    }

    /// Every version of a SKU, oldest first (the CSV's own is not among them).
    pub async fn sku_history(&self, sku: &Sku) -> anyhow::Result<Vec<Document>> {
        self.skus.history(sku.as_str()).await
    }

    /// Every version of an outlet, oldest first (the CSV's own is not among them).
    pub async fn outlet_history(&self, outlet: &OutletId) -> anyhow::Result<Vec<Document>> {
        self.outlets.history(outlet.as_str()).await
    }
}

impl Entry for SkuInfo {
    fn in_catalogue<'a>(catalogue: &'a Catalogue, key: &str) -> Option<&'a Self> {
        catalogue.sku(&Sku::parse("sku", key).ok()?)
    }

    fn put(catalogue: Catalogue, entry: Self) -> Catalogue {
        catalogue.with_sku(entry)
    }
}

impl Versioned for SkuInfo {
    const CURRENT: &'static str = "skus";
    const VERSIONS: &'static str = "sku_versions";
    const KEY: &'static str = "sku";

    fn key(&self) -> &str {
        self.sku.as_str()
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn with_version(self, version: u64) -> Self {
        SkuInfo::with_version(self, version)
    }

    fn same_fields(&self, b: &Self) -> bool {
        (
            &self.name,
            &self.category,
            self.shelf_life_days,
            self.status,
        ) == (&b.name, &b.category, b.shelf_life_days, b.status)
    }

    fn to_doc(&self) -> Document {
        let status = match self.status {
            SkuStatus::Active => "active",
            SkuStatus::Retired => "retired",
        };
        doc! {
            "sku": self.sku.as_str(),
            "version": self.version as i64,
            "name": &self.name,
            "category": &self.category,
            "shelf_life_days": self.shelf_life_days.map(i64::from),
            "status": status,
        }
    }

    fn from_doc(d: &Document) -> anyhow::Result<Self> {
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
}

impl Versioned for Outlet {
    const CURRENT: &'static str = "outlets";
    const VERSIONS: &'static str = "outlet_versions";
    const KEY: &'static str = "outlet";

    fn key(&self) -> &str {
        self.id.as_str()
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn with_version(self, version: u64) -> Self {
        Outlet::with_version(self, version)
    }

    fn same_fields(&self, b: &Self) -> bool {
        (&self.name, &self.city, self.kind) == (&b.name, &b.city, b.kind)
    }

    fn to_doc(&self) -> Document {
        doc! {
            "outlet": self.id.as_str(),
            "version": self.version as i64,
            "name": &self.name,
            "city": &self.city,
            "kind": kind_name(self.kind),
        }
    }

    fn from_doc(d: &Document) -> anyhow::Result<Self> {
        let kind = match d.get_str("kind")? {
            "outlet" => OutletKind::Outlet,
            "kitchen" => OutletKind::Kitchen,
            other => anyhow::bail!("unknown kind '{other}'"),
        };
        let outlet = Outlet::new(
            d.get_str("outlet")?,
            d.get_str("name")?,
            d.get_str("city")?,
            kind,
        )?;
        Ok(outlet.with_version(u64::try_from(d.get_i64("version")?)?))
    }
}

impl Entry for Outlet {
    /// A shop does not become a kitchen or the other way round: delivery zones, routing and
    /// the POS keys were set up for what it is.
    fn may_become(&self, next: &Self) -> Result<(), Invalid> {
        if self.kind != next.kind {
            return Err(Invalid::new(
                "kind",
                format!(
                    "outlet {} is a{} {}; its kind cannot change (add a new outlet instead)",
                    self.id,
                    if self.kind == OutletKind::Outlet {
                        "n"
                    } else {
                        ""
                    },
                    kind_name(self.kind)
                ),
            ));
        }
        Ok(())
    }

    fn in_catalogue<'a>(catalogue: &'a Catalogue, key: &str) -> Option<&'a Self> {
        catalogue.outlet(&OutletId::parse("outlet", key).ok()?)
    }

    fn put(catalogue: Catalogue, entry: Self) -> Catalogue {
        catalogue.with_outlet(entry)
    }
}

fn kind_name(kind: OutletKind) -> &'static str {
    match kind {
        OutletKind::Outlet => "outlet",
        OutletKind::Kitchen => "kitchen",
    }
}
