//! The MongoDB ledger: the append-only record of truth, one document per outlet seq.
//!
//! Documents are only ever inserted (by `LedgerWriter`), never updated or deleted. Times are
//! kept as milliseconds since the epoch in fields ending `_ms`, exactly as the scripts wrote
//! them, so the outbox JSON and the stored document are the same value.

use std::collections::BTreeMap;

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{
    Acknowledgment, ClientOptions, CollectionOptions, IndexOptions, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{
    rfc3339_ms, Channel, Counters, HeldLot, IdempotencyKey, LedgerKind, Line, Lot, LotDelta,
    OutletId, Qty, ReservationId, ReservationStatus, Sku, TRANSFER_IN_PREFIX,
};
use crate::keys::ClaimKind;
use crate::settings::MongoSettings;
use crate::store::{MovementResult, ReleaseReason, ResRecord, RestorePlan};

const ENTRIES: &str = "ledger";
/// POS messages that could not be applied, with the reason.
pub const REJECTED: &str = "rejected";
/// MongoDB's duplicate key error: the document is already written.
const DUPLICATE_KEY: i32 = 11000;
/// Documents per query when folding the ledger.
const FOLD_PAGE: u64 = 5000;

/// How fast a fold reads: pages of `page_docs`, and after each a rest of `pause` times as long
/// as the page took to read.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub page_docs: u64,
    pub pause: f64,
}

impl Pace {
    /// As fast as the server answers: a rebuild someone waits for.
    pub const FULL: Pace = Pace {
        page_docs: FOLD_PAGE,
        pause: 0.0,
    };
    /// Half the time, in small pages: a reader in the background (the reconciler) so leaves
    /// the server to the ledger writer's inserts half the time. SecantusDB answers one request
    /// at a time under Python's GIL, so a read going flat out slows every insert.
    pub const BACKGROUND: Pace = Pace {
        page_docs: 1000,
        pause: 1.0,
    };
}

/// `(outlet, reservation)`: made by earlier versions, read by nothing; dropped at start.
const UNUSED_INDEX: &str = "outlet_reservation";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub sku: Sku,
    pub d_on_hand: i64,
    pub d_reserved: i64,
    /// The line's lot changes (documents from before lots have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotDelta>,
}

/// One ledger document. `lines` carries the exact deltas, so the ledger alone explains every
/// number: on_hand and reserved of a SKU are the sums of its deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `{outlet}:{seq}`, filled in by the writer; a second insert of the same seq collides.
    #[serde(rename = "_id", default)]
    pub id: String,
    pub outlet: OutletId,
    pub seq: i64,
    pub kind: LedgerKind,
    pub at_ms: i64,
    pub lines: Vec<LedgerLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReleaseReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qty: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The other outlet of a transfer half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterpart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hand_after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<i64>,
    /// The delivery PIN of a routed hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// The hold that took over a re-routed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerouted_to: Option<ReservationId>,
    /// Who made the change (see `store::By`); documents written before it was recorded
    /// have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl LedgerEntry {
    /// Parses an outbox entry's JSON and gives it its `_id`.
    pub fn from_outbox(json: &str) -> anyhow::Result<Self> {
        let mut entry: LedgerEntry =
            serde_json::from_str(json).with_context(|| format!("outbox document {json}"))?;
        entry.id = format!("{}:{}", entry.outlet, entry.seq);
        Ok(entry)
    }

    /// The document as `/v1/ledger` shows it: times in RFC 3339 beside the stored ms.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("ledger entry serializes");
        let obj = v.as_object_mut().expect("ledger entry is an object");
        obj.remove("_id");
        obj.insert("at".into(), rfc3339_ms(self.at_ms).into());
        if let Some(ms) = self.event_at_ms {
            obj.insert("event_at".into(), rfc3339_ms(ms).into());
        }
        if let Some(ms) = self.expires_at_ms {
            obj.insert("expires_at".into(), rfc3339_ms(ms).into());
        }
        v
    }
}

/// A movement's remembered answer, for replays after a rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EventRecord {
    hash: String,
    result: MovementResult,
    at_ms: i64,
}

/// The outlet as the ledger explains it, up to some seq. It serializes whole: that is a
/// checkpoint (see `checkpoint.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    pub seq: u64,
    pub counters: BTreeMap<Sku, Counters>,
    pub reservations: BTreeMap<ReservationId, ResRecord>,
    events: BTreeMap<String, EventRecord>,
    /// Each SKU's lots by lot id (a checkpoint from before lots has none).
    #[serde(default)]
    pub lots: BTreeMap<Sku, BTreeMap<String, Lot>>,
}

impl Projection {
    /// Folds one document in; documents must come in seq order.
    pub fn apply(&mut self, e: &LedgerEntry) -> anyhow::Result<()> {
        let seq = u64::try_from(e.seq).context("negative seq")?;
        anyhow::ensure!(
            seq == self.seq + 1,
            "ledger of {} jumps from seq {} to {}",
            e.outlet,
            self.seq,
            seq
        );
        self.seq = seq;
        for line in &e.lines {
            let c = self.counters.entry(line.sku.clone()).or_default();
            c.on_hand += line.d_on_hand;
            c.reserved += line.d_reserved;
            c.seq = seq;
            self.fold_lots(line);
        }
        match e.kind {
            LedgerKind::ReservationHeld => {
                let id = e
                    .reservation
                    .clone()
                    .context("held entry without reservation")?;
                let lines = e
                    .lines
                    .iter()
                    .map(|l| {
                        Ok(Line {
                            sku: l.sku.clone(),
                            qty: Qty::parse("qty", l.d_reserved, i64::MAX)?,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let record = ResRecord {
                    id: id.clone(),
                    status: ReservationStatus::Held,
                    lines,
                    expires_at: e
                        .expires_at_ms
                        .context("held entry without expires_at_ms")?,
                    channel: e.channel.context("held entry without channel")?,
                    customer_ref: e.customer_ref.clone(),
                    idem: e
                        .idempotency_key
                        .clone()
                        .context("held entry without idempotency_key")?,
                    hash: e.body_hash.clone().unwrap_or_default(),
                    created_at: e.at_ms,
                    held_seq: seq,
                    payment_ref: None,
                    ended_seq: None,
                    ended_at: None,
                    pin: e.pin.clone(),
                    rerouted_to: None,
                    lots: e
                        .lines
                        .iter()
                        .flat_map(|l| {
                            l.lots.iter().map(|d| HeldLot {
                                sku: l.sku.clone(),
                                lot: d.lot.clone(),
                                qty: d.d_held,
                            })
                        })
                        .collect(),
                };
                self.reservations.insert(id, record);
            }
            LedgerKind::SaleWeb | LedgerKind::ReservationReleased => {
                let id = e
                    .reservation
                    .as_ref()
                    .context("reservation entry without reservation")?;
                let record = self
                    .reservations
                    .get_mut(id)
                    .with_context(|| format!("{id} ends before it is held"))?;
                record.status = match (e.kind, e.reason) {
                    (LedgerKind::SaleWeb, _) => ReservationStatus::Confirmed,
                    (_, Some(ReleaseReason::Cancelled)) => ReservationStatus::Cancelled,
                    (_, Some(ReleaseReason::Rerouted)) => ReservationStatus::Rerouted,
                    _ => ReservationStatus::Expired,
                };
                record.payment_ref = e.payment_ref.clone();
                record.rerouted_to = e.rerouted_to.clone();
                record.ended_seq = Some(seq);
                record.ended_at = Some(e.at_ms);
            }
            _ => {
                if let (Some(key), Some(hash), [line]) = (&e.event_key, &e.body_hash, &e.lines[..])
                {
                    let c = self.counters[&line.sku];
                    let result = MovementResult {
                        seq,
                        on_hand: c.on_hand,
                        reserved: c.reserved,
                        available: c.available(),
                        shortfall: e.shortfall,
                        lots: line.lots.clone(),
                    };
                    let record = EventRecord {
                        hash: hash.clone(),
                        result,
                        at_ms: e.at_ms,
                    };
                    self.events.insert(key.clone(), record);
                }
            }
        }
        Ok(())
    }

    /// Folds a line's lot changes in; a lot with nothing on hand and nothing held is gone.
    fn fold_lots(&mut self, line: &LedgerLine) {
        if line.lots.is_empty() {
            return;
        }
        let lots = self.lots.entry(line.sku.clone()).or_default();
        for d in &line.lots {
            let lot = lots.entry(d.lot.clone()).or_insert_with(|| Lot {
                lot: d.lot.clone(),
                made_at: d.made_at,
                expires_at: d.expires_at,
                qty: 0,
                held: 0,
            });
            lot.qty += d.d_qty;
            lot.held += d.d_held;
            if lot.qty == 0 && lot.held == 0 {
                lots.remove(&d.lot);
            }
        }
        if lots.is_empty() {
            self.lots.remove(&line.sku);
        }
    }

    /// A SKU's lots as Redis keeps them: earliest expiry first, then by lot id.
    pub fn lots_of(&self, sku: &Sku) -> Vec<Lot> {
        let mut lots: Vec<Lot> = self
            .lots
            .get(sku)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        Lot::sort(&mut lots);
        lots
    }

    /// Reservations still held.
    pub fn live_holds(&self) -> impl Iterator<Item = &ResRecord> {
        self.reservations
            .values()
            .filter(|r| r.status == ReservationStatus::Held)
    }

    /// Drops what no restore at or after `now_ms` would keep and no later document can refer
    /// to: reservations that ended more than their retention ago, and event records past
    /// theirs. Live holds always stay. Keeps a long-lived projection (the reconciler's, a
    /// checkpoint) as small as the outlet's live state.
    pub fn prune(&mut self, now_ms: i64, res_retain_ms: i64, event_retain_ms: i64) {
        self.reservations
            .retain(|_, r| r.ended_at.is_none_or(|at| at + res_retain_ms > now_ms));
        self.events
            .retain(|_, e| e.at_ms + event_retain_ms > now_ms);
    }

    /// The Redis state to restore at `now_ms`: counters, live holds, and whatever
    /// reservations, Idempotency-Keys and event keys are still inside their retention.
    pub fn restore_plan(
        &self,
        now_ms: i64,
        res_retain_ms: i64,
        event_retain_ms: i64,
    ) -> anyhow::Result<RestorePlan> {
        let mut plan = RestorePlan {
            seq: self.seq,
            counters: self
                .counters
                .iter()
                .map(|(sku, c)| (sku.clone(), c.on_hand, c.reserved, c.seq))
                .collect(),
            lots: self
                .lots
                .keys()
                .map(|sku| Ok((sku.clone(), serde_json::to_string(&self.lots_of(sku))?)))
                .collect::<anyhow::Result<_>>()?,
            ..RestorePlan::default()
        };
        for r in self.reservations.values() {
            let forget_res_at = r.ended_at.map(|at| at + res_retain_ms);
            if forget_res_at.is_some_and(|at| at <= now_ms) {
                continue;
            }
            plan.reservations
                .push((r.id.to_string(), serde_json::to_string(r)?));
            if let Some(at) = forget_res_at {
                plan.forget.push((at, format!("r:{}", r.id)));
            }
            let forget_idem_at = r.created_at + res_retain_ms;
            if forget_idem_at > now_ms {
                let idem = serde_json::json!({"id": r.id, "hash": r.hash});
                plan.idem.push((r.idem.to_string(), idem.to_string()));
                plan.forget.push((forget_idem_at, format!("i:{}", r.idem)));
                let ttl_secs = ((forget_idem_at - now_ms) / 1000) as u64 + 1;
                plan.claims
                    .push((ClaimKind::Reservation, r.idem.to_string(), ttl_secs));
            }
        }
        for (key, e) in &self.events {
            let forget_at = e.at_ms + event_retain_ms;
            if forget_at > now_ms {
                let record = serde_json::json!({"hash": e.hash, "result": e.result});
                plan.events.push((key.clone(), record.to_string()));
                plan.forget.push((forget_at, format!("e:{key}")));
                // The receiving half of a transfer is claimed by its sending outlet.
                if !key.starts_with(TRANSFER_IN_PREFIX) {
                    let ttl_secs = ((forget_at - now_ms) / 1000) as u64 + 1;
                    plan.claims.push((ClaimKind::Event, key.clone(), ttl_secs));
                }
            }
        }
        Ok(plan)
    }
}

#[derive(Clone)]
pub struct Ledger {
    pub(crate) db: Database,
    entries: Collection<LedgerEntry>,
}

impl Ledger {
    /// Connects once; clones share the client's pool.
    pub async fn connect(settings: &MongoSettings) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(settings.uri.expose())
            .await
            .context("parsing mongo.uri")?;
        options.app_name = Some("shelfsync".into());
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        // Every write of ours is idempotent by itself (ledger documents by `(outlet, seq)`,
        // upserts with `$setOnInsert`, replacements by id) and retried by its owner, so the
        // driver's retryable writes add nothing. They cost a lot on SecantusDB: it records each
        // one in a table shared by the whole server, and past 10,000 of them within 30 minutes
        // every write pays milliseconds for it (ARCHITECTURE.md, The ledger's database). A URI
        // that says `retryWrites=true` keeps them.
        if options.retry_writes.is_none() {
            options.retry_writes = Some(false);
        }
        let client = Client::with_options(options).context("creating the MongoDB client")?;
        let db = client.database(&settings.database);
        // A ledger document counts as durable once the server has journaled it.
        let durable = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build();
        let entries = db.collection_with_options(
            ENTRIES,
            CollectionOptions::builder().write_concern(durable).build(),
        );
        Ok(Self { db, entries })
    }

    /// A collection beside the ledger, for the typed handle that owns it (zones, WhatsApp
    /// messages); the ledger's own (entries, checkpoints, drift, rejected) are built here.
    pub(crate) fn beside(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .context("pinging MongoDB")?;
        Ok(())
    }

    /// The ledger's indexes: `(outlet, seq)` unique (the tail, and what makes a re-sent
    /// batch harmless) and `(outlet, lines.sku, seq)` (`GET /v1/ledger?sku=`).
    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        let unique = IndexOptions::builder()
            .unique(true)
            .name("outlet_seq".to_string())
            .build();
        let indexes = [
            IndexModel::builder()
                .keys(doc! {"outlet": 1, "seq": 1})
                .options(unique)
                .build(),
            IndexModel::builder()
                .keys(doc! {"outlet": 1, "lines.sku": 1, "seq": 1})
                .options(
                    IndexOptions::builder()
                        .name("outlet_sku_seq".to_string())
                        .build(),
                )
                .build(),
        ];
        self.entries
            .create_indexes(indexes)
            .await
            .context("creating ledger indexes")?;
        // An index earlier versions made and nothing reads: every index entry costs the
        // server a write per document (ARCHITECTURE.md, The ledger's database).
        let names = self
            .entries
            .list_index_names()
            .await
            .context("listing ledger indexes")?;
        if names.iter().any(|n| n == UNUSED_INDEX) {
            self.entries
                .drop_index(UNUSED_INDEX)
                .await
                .context("dropping the unused ledger index")?;
        }
        // Rejected POS messages go at their own `expire_at` (the server's TTL sweep, every
        // 60 s on MongoDB): each record carries its date, so a changed
        // `mqtt.rejected_keep_secs` needs no new index.
        let expiry = IndexModel::builder()
            .keys(doc! {"expire_at": 1})
            .options(
                IndexOptions::builder()
                    .name("expire_at".to_string())
                    .expire_after(std::time::Duration::ZERO)
                    .build(),
            )
            .build();
        self.db
            .collection::<Document>(REJECTED)
            .create_index(expiry)
            .await
            .context("creating the expiry index of rejected POS messages")?;
        Ok(())
    }

    /// Inserts a batch, unordered. A duplicate key is "already written" (a retry after a
    /// crash between insert and outbox trim) only when the stored document is the same one;
    /// a different document at the same seq means Redis and the ledger diverged, and the
    /// batch fails loudly instead of being trimmed away.
    pub async fn insert_batch(&self, entries: &[LedgerEntry]) -> anyhow::Result<()> {
        let failure = match self.entries.insert_many(entries).ordered(false).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let duplicates: Vec<usize> = match failure.kind.as_ref() {
            ErrorKind::InsertMany(f) if f.write_concern_error.is_none() => match &f.write_errors {
                Some(errors) if errors.iter().all(|w| w.code == DUPLICATE_KEY) => {
                    errors.iter().map(|w| w.index).collect()
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        if duplicates.is_empty() {
            return Err(anyhow::Error::new(failure)
                .context(format!("inserting a ledger batch of {}", entries.len())));
        }
        let ids: Vec<&str> = duplicates
            .iter()
            .filter_map(|&i| entries.get(i))
            .map(|e| e.id.as_str())
            .collect();
        let stored: Vec<LedgerEntry> = self
            .entries
            .find(doc! {"_id": {"$in": &ids}})
            .await
            .context("reading back duplicate ledger documents")?
            .try_collect()
            .await
            .context("reading back duplicate ledger documents")?;
        for &i in &duplicates {
            let mine = &entries[i];
            match stored.iter().find(|s| s.id == mine.id) {
                Some(theirs) if theirs == mine => {}
                Some(_) => anyhow::bail!(
                    "ledger document {} differs from the outbox entry with the same seq: Redis and the ledger diverged",
                    mine.id
                ),
                None => anyhow::bail!("ledger document {} reported as duplicate but not found", mine.id),
            }
        }
        Ok(())
    }

    /// Keeps a POS message that could not be applied, once per `id` (a digest of its topic
    /// and payload), so a redelivery after a crash does not record it twice. The record
    /// carries its `expire_at` (see `ensure_indexes`).
    pub async fn record_rejected(&self, id: &str, record: Document) -> anyhow::Result<()> {
        self.db
            .collection::<Document>(REJECTED)
            .update_one(doc! {"_id": id}, doc! {"$setOnInsert": record})
            .upsert(true)
            .await
            .context("recording a rejected POS message")?;
        Ok(())
    }

    /// Whether a rejected POS message with this id is kept.
    pub async fn is_rejected(&self, id: &str) -> anyhow::Result<bool> {
        let found = self
            .db
            .collection::<Document>(REJECTED)
            .find_one(doc! {"_id": id})
            .projection(doc! {"_id": 1})
            .await
            .context("looking up a rejected POS message")?;
        Ok(found.is_some())
    }

    /// Whether the ledger holds the outlet's document at `seq`.
    async fn has_seq(&self, outlet: &OutletId, seq: u64) -> anyhow::Result<bool> {
        let found = self
            .entries
            .clone_with_type::<Document>()
            .find_one(doc! {"_id": format!("{outlet}:{seq}")})
            .projection(doc! {"_id": 1})
            .await
            .with_context(|| format!("looking up {outlet}:{seq}"))?;
        Ok(found.is_some())
    }

    /// The highest seq the ledger holds for the outlet (0 when none).
    ///
    /// Seqs are contiguous from 1 (`Projection::apply` refuses a gap), so this gallops and
    /// bisects on `_id` point lookups: about 2·log2(n) lookups, each O(1) on any MongoDB. A
    /// descending sort on `(outlet, seq)` would do on MongoDB, but SecantusDB sorts it in
    /// memory (seconds per outlet at 100k documents).
    pub async fn max_seq(&self, outlet: &OutletId) -> anyhow::Result<u64> {
        if !self.has_seq(outlet, 1).await? {
            return Ok(0);
        }
        let (mut lo, mut hi) = (1u64, 2u64);
        while self.has_seq(outlet, hi).await? {
            lo = hi;
            hi *= 2;
        }
        // has(lo) and !has(hi)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.has_seq(outlet, mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The outlet's documents after `after_seq` in seq order, optionally only those
    /// touching `sku`.
    pub async fn page(
        &self,
        outlet: &OutletId,
        sku: Option<&Sku>,
        after_seq: u64,
        limit: i64,
    ) -> anyhow::Result<Vec<LedgerEntry>> {
        let mut filter = doc! {"outlet": outlet.as_str()};
        match sku {
            Some(sku) => {
                filter.insert("seq", doc! {"$gt": after_seq as i64});
                filter.insert("lines.sku", sku.as_str());
            }
            // Seqs are contiguous, so the page is exactly this range: a bounded range keeps
            // servers that sort in memory (SecantusDB) fast too.
            None => {
                filter.insert(
                    "seq",
                    doc! {"$gt": after_seq as i64, "$lte": after_seq as i64 + limit},
                );
            }
        }
        self.entries
            .find(filter)
            .sort(doc! {"seq": 1})
            .limit(limit)
            .await
            .context("querying the ledger")?
            .try_collect()
            .await
            .context("reading ledger documents")
    }

    /// The `at_ms` of the outlet's document `seq`, if it exists.
    pub async fn at_of(&self, outlet: &OutletId, seq: u64) -> anyhow::Result<Option<i64>> {
        let d = self
            .entries
            .find_one(doc! {"_id": format!("{outlet}:{seq}")})
            .await
            .context("reading a ledger document")?;
        Ok(d.map(|e| e.at_ms))
    }

    /// The first seq of the outlet whose document is at or after `at_ms` (a binary search
    /// over seqs, whose times rise with them but for clock differences between processes,
    /// which the caller allows a margin for); `max_seq + 1` when none is.
    pub async fn first_seq_at(&self, outlet: &OutletId, at_ms: i64) -> anyhow::Result<u64> {
        let (mut lo, mut hi) = (1u64, self.max_seq(outlet).await? + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.at_of(outlet, mid).await? {
                Some(t) if t < at_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Every unit `outlet` sold (counter and web sales) from `since_ms` on, as (SKU, when, units):
    /// when is the sale's own time (`event_at`, a till's clock) where it has one. Read in
    /// bounded seq ranges, sales only.
    pub async fn sales_since(
        &self,
        outlet: &OutletId,
        since_ms: i64,
    ) -> anyhow::Result<Vec<(Sku, i64, i64)>> {
        const SPAN: u64 = 5000;
        #[derive(Deserialize)]
        struct Sale {
            at_ms: i64,
            #[serde(default)]
            event_at_ms: Option<i64>,
            lines: Vec<LedgerLine>,
        }
        let (mut from, last) = (
            self.first_seq_at(outlet, since_ms).await?,
            self.max_seq(outlet).await?,
        );
        let kinds = [
            LedgerKind::SaleCounter.as_str(),
            LedgerKind::SaleWeb.as_str(),
        ];
        let mut sales = Vec::new();
        while from <= last {
            let filter = doc! {
                "outlet": outlet.as_str(),
                "seq": {"$gte": from as i64, "$lt": (from + SPAN) as i64},
                "kind": {"$in": kinds.to_vec()},
            };
            let mut found = self
                .db
                .collection::<Sale>(ENTRIES)
                .find(filter)
                .projection(doc! {"at_ms": 1, "event_at_ms": 1, "lines": 1})
                .await
                .context("querying the ledger's sales")?;
            while let Some(sale) = found
                .try_next()
                .await
                .context("reading the ledger's sales")?
            {
                let at = sale.event_at_ms.unwrap_or(sale.at_ms);
                for line in sale.lines {
                    if line.d_on_hand < 0 {
                        sales.push((line.sku, at, -line.d_on_hand));
                    }
                }
            }
            from += SPAN;
        }
        Ok(sales)
    }

    /// The outlet's documents with seq in `(after_seq, after_seq + span]` and `at_ms` in
    /// `[from_ms, to_ms)`, in seq order: one page of an export. The seq range is the query (the
    /// shape `page` uses, fast on any server); the times are filtered here, since a second
    /// range in the filter made SecantusDB scan (about 1.5 s a page at 1,000,000 documents).
    pub async fn range_page(
        &self,
        outlet: &OutletId,
        after_seq: u64,
        span: u64,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<LedgerEntry>> {
        let span = i64::try_from(span).unwrap_or(i64::MAX);
        let mut page = self.page(outlet, None, after_seq, span).await?;
        page.retain(|e| (from_ms..to_ms).contains(&e.at_ms));
        Ok(page)
    }

    /// Folds the outlet's documents after `p.seq` into `p`, up to `to_seq` (which must
    /// exist) or to the last document, a bounded seq range per query. `progress` hears how
    /// many documents each page added. A gap in the seqs is an error.
    pub async fn fold(
        &self,
        outlet: &OutletId,
        p: &mut Projection,
        to_seq: Option<u64>,
        progress: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        self.fold_paced(outlet, p, to_seq, Pace::FULL, progress)
            .await
    }

    /// `fold` at `pace`.
    pub async fn fold_paced(
        &self,
        outlet: &OutletId,
        p: &mut Projection,
        to_seq: Option<u64>,
        pace: Pace,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let Pace { page_docs, pause } = pace;
        let page_docs = page_docs.max(1);
        loop {
            let want = match to_seq {
                Some(to) if p.seq >= to => return Ok(()),
                Some(to) => (to - p.seq).min(page_docs),
                None => page_docs,
            };
            let started = std::time::Instant::now();
            let page = self.page(outlet, None, p.seq, want as i64).await?;
            if pause > 0.0 {
                tokio::time::sleep(started.elapsed().mul_f64(pause)).await;
            }
            if page.is_empty() {
                return match to_seq {
                    Some(to) => Err(anyhow::anyhow!(
                        "the ledger of {outlet} has no seq {} (folding to {to})",
                        p.seq + 1
                    )),
                    None => Ok(()),
                };
            }
            for entry in &page {
                p.apply(entry)?;
            }
            progress(page.len() as u64);
        }
    }

    /// Documents of the outlet, counted; only those after `after_seq` when given.
    pub async fn count(&self, outlet: &OutletId, after_seq: Option<u64>) -> anyhow::Result<u64> {
        let mut filter = doc! {"outlet": outlet.as_str()};
        if let Some(after) = after_seq {
            filter.insert("seq", doc! {"$gt": after as i64});
        }
        self.entries
            .count_documents(filter)
            .await
            .with_context(|| format!("counting the ledger of {outlet}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400_000;
    const O: &str = "indore-palasia";

    fn entry(v: serde_json::Value) -> LedgerEntry {
        LedgerEntry::from_outbox(&v.to_string()).unwrap()
    }

    fn res_id(n: u32) -> String {
        format!("{O}-{n:0>22}")
    }

    fn held(seq: i64, n: u32, at: i64) -> LedgerEntry {
        entry(
            json!({"outlet": O, "seq": seq, "kind": "reservation_held", "at_ms": at,
            "lines": [{"sku": "a", "d_on_hand": 0, "d_reserved": 1}], "reservation": res_id(n),
            "channel": "web", "expires_at_ms": at + 90_000, "idempotency_key": format!("k{n}"),
            "body_hash": "h"}),
        )
    }

    fn ended(seq: i64, n: u32, at: i64, kind: &str) -> LedgerEntry {
        let (d_on_hand, reason) = match kind {
            "sale_web" => (-1, None),
            _ => (0, Some("cancelled")),
        };
        entry(json!({"outlet": O, "seq": seq, "kind": kind, "at_ms": at,
            "lines": [{"sku": "a", "d_on_hand": d_on_hand, "d_reserved": -1}],
            "reservation": res_id(n), "channel": "web", "reason": reason, "payment_ref": "p"}))
    }

    fn movement(seq: i64, key: &str, at: i64, qty: i64) -> LedgerEntry {
        entry(
            json!({"outlet": O, "seq": seq, "kind": "receipt", "at_ms": at,
            "lines": [{"sku": "a", "d_on_hand": qty, "d_reserved": 0}],
            "event_id": key, "event_key": key, "body_hash": "h", "qty": qty}),
        )
    }

    #[test]
    fn a_restored_hold_carries_the_status_text_the_snapshot_script_looks_for() {
        // snapshot.lua passes over reservation records without the exact text
        // `"status":"held"` (no spaces) before decoding any: a held record written by a
        // restore must contain it, and a finished one must not.
        let now = 100 * DAY;
        let mut p = Projection::default();
        for d in [
            held(1, 1, now - 1000),
            held(2, 2, now - 1000),
            ended(3, 2, now - 500, "sale_web"),
        ] {
            p.apply(&d).unwrap();
        }
        let plan = p.restore_plan(now, DAY, 7 * DAY).unwrap();
        let record = |n: u32| {
            let id = res_id(n);
            plan.reservations
                .iter()
                .find(|(r, _)| *r == id)
                .map(|(_, json)| json.clone())
                .unwrap()
        };
        assert!(record(1).contains(r#""status":"held""#), "{}", record(1));
        assert!(!record(2).contains(r#""status":"held""#), "{}", record(2));
    }

    #[test]
    fn a_pruned_projection_restores_exactly_what_the_full_one_does() {
        let now = 100 * DAY;
        let docs = [
            movement(1, "old-receipt", now - 30 * DAY, 10),
            held(2, 1, now - 10 * DAY),
            ended(3, 1, now - 10 * DAY, "reservation_released"),
            held(4, 2, now - 3_600_000),
            ended(5, 2, now - 1_800_000, "sale_web"),
            held(6, 3, now - 3 * DAY),
            movement(7, "new-receipt", now - DAY, 5),
        ];
        let mut full = Projection::default();
        for d in &docs {
            full.apply(d).unwrap();
        }
        let mut pruned = full.clone();

        pruned.prune(now, DAY, 7 * DAY);

        assert_eq!(
            pruned.reservations.len(),
            2,
            "the hold ended 10 days ago goes"
        );
        assert_eq!(pruned.events.len(), 1, "the 30-day-old event id goes");
        assert_eq!(pruned.live_holds().count(), 1);
        assert_eq!(
            pruned.restore_plan(now, DAY, 7 * DAY).unwrap(),
            full.restore_plan(now, DAY, 7 * DAY).unwrap()
        );
        // The ledger after the checkpoint folds onto both alike.
        let later = ended(8, 3, now, "reservation_released");
        full.apply(&later).unwrap();
        pruned.apply(&later).unwrap();
        assert_eq!(
            pruned.restore_plan(now, DAY, 7 * DAY).unwrap(),
            full.restore_plan(now, DAY, 7 * DAY).unwrap()
        );
        assert_eq!(pruned.counters, full.counters);
    }
}
