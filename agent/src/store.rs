//! The write-ahead store: every sale the till sent, on disk before the till hears `202`, until
//! shelfsync has applied (or refused) each of its lines.
//!
//! SQLite in WAL mode with `synchronous = FULL`: a commit is fsynced before it returns, so a
//! kill -9 or a power cut after the answer keeps the sale, and one before it leaves nothing
//! half-written (the transaction is atomic; the till, unanswered, sends the voucher again).
//! Chosen over an append-only file of our own because what the agent must keep besides the
//! log (which voucher had which digest, which line is settled, the latest stock value per
//! SKU, deleting what is done) is exactly what a database does, and SQLite's recovery after
//! a crash is tested far beyond anything we would write.
//!
//! One connection behind a std `Mutex` (nothing awaits while it is held); async callers go
//! through `spawn_blocking`. Bounded: past `store.pending_max` events or `store.disk_max_bytes`
//! a new sale is refused (`Full`) and the till keeps it; settled events go after their
//! retention (`cleanup`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::sale::Entry;
use crate::settings::StoreSettings;
use shelfsync::domain::OutletId;

const SCHEMA: &str = include_str!("schema.sql");
const DB_FILE: &str = "agent.db";
const LOCK_FILE: &str = "agent.lock";
/// Rows the clean-up deletes per statement, so that the webhook never waits long for it.
const CLEANUP_BATCH: i64 = 5_000;
/// Free pages given back to the file system per lock, by the clean-up (4 MiB of 4 KiB pages).
const VACUUM_STEP_PAGES: i64 = 1_000;
/// The WAL file is cut back to this after a checkpoint (it is reused, not shrunk, otherwise).
const WAL_KEEP_BYTES: i64 = 16 * 1024 * 1024;

/// What recording a sale did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now.
    New,
    /// The same voucher with the same content was stored before: nothing changed.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("voucher {0} was recorded before with other content")]
    Conflict(String),
    #[error("{0}")]
    Full(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// An event to send: its place in the store and the exact movement JSON.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: i64,
    pub event_id: String,
    pub payload: String,
    pub created_ms: i64,
}

/// shelfsync's word on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Durable in the ledger, at the outlet's `seq` (unknown from an older shelfsync).
    Applied { seq: Option<i64> },
    /// Refused for good (`validation_failed`, `too_old`, ...): kept for the operator.
    Rejected { code: String, reason: String },
}

/// An event shelfsync settled, as `settle` reports it (for metrics).
#[derive(Debug, Clone)]
pub struct Settled {
    pub event_id: String,
    pub created_ms: i64,
    pub applied: bool,
}

/// The latest stock value shelfsync published for a SKU of this outlet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockValue {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub seq: i64,
    /// When shelfsync published it (its `at`).
    pub at: String,
}

/// A stock value with this outlet's sales that it does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalStock {
    #[serde(flatten)]
    pub value: StockValue,
    /// What the sales and returns recorded here and not yet in `value` do to on_hand.
    pub d_local: i64,
    /// When the agent received `value`, ms since the epoch.
    #[serde(skip)]
    pub received_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub pending: i64,
    pub oldest_pending_ms: Option<i64>,
    pub applied: i64,
    pub rejected: i64,
    pub vouchers: i64,
    pub stock_values: i64,
    /// The database's pages in use: what `store.disk_max_bytes` bounds.
    pub used_bytes: u64,
    /// The store's files on disk (free pages and the WAL too).
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectedEvent {
    pub event_id: String,
    pub voucher: String,
    pub sku: String,
    pub code: String,
    pub reason: String,
    pub settled_ms: i64,
}

/// What one clean-up deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub events: u64,
    pub vouchers: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    dir: PathBuf,
    limits: StoreSettings,
    /// Held for the store's life: a second agent on the same directory is refused.
    _lock: File,
}

struct Inner {
    conn: Connection,
    /// Events in state 'pending', kept in step with the table.
    pending: i64,
}

impl Store {
    /// Opens (or creates) the store in `dir` for `outlet`. Refuses a directory another agent
    /// holds, and one made for another outlet (its event ids and topics name that outlet).
    pub fn open(dir: &Path, outlet: &OutletId, limits: StoreSettings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = File::create(dir.join(LOCK_FILE))
            .with_context(|| format!("creating {}", dir.join(LOCK_FILE).display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another shelfsync-agent holds {} (one agent per store)",
                dir.display()
            );
        }
        let path = dir.join(DB_FILE);
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // auto_vacuum takes effect only on a database without tables: set before the schema.
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;",
        )
        .context("setting the store's pragmas")?;
        conn.execute_batch(&format!("PRAGMA journal_size_limit = {WAL_KEEP_BYTES};"))
            .context("setting the store's pragmas")?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("{} is not in WAL mode ({mode})", path.display());
        }
        conn.execute_batch(SCHEMA)
            .context("creating the store's tables")?;
        let owner: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'outlet'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match owner {
            Some(o) if o != outlet.as_str() => bail!(
                "{} holds the sales of outlet {o}, not {outlet}: give each outlet a store of its own",
                dir.display()
            ),
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('outlet', ?1)",
                    [outlet.as_str()],
                )?;
            }
        }
        let pending = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(Self {
            inner: Mutex::new(Inner { conn, pending }),
            dir: dir.to_owned(),
            limits,
            _lock: lock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while the lock was held (a bug) leaves a connection whose transaction
        // rolled back when it unwound: still consistent, so the poison is ignored.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store's files on disk (the database and its WAL).
    pub fn disk_bytes(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                std::fs::metadata(self.dir.join(format!("{DB_FILE}{suffix}"))).ok()
            })
            .map(|m| m.len())
            .sum()
    }

    /// What the store holds: its pages in use. Free pages do not count (the next writes reuse
    /// them before the file grows, and the clean-up gives them back), nor does the WAL, which
    /// checkpoints keep to a few MiB and `journal_size_limit` cuts back to `WAL_KEEP_BYTES`.
    fn used_bytes(conn: &Connection) -> anyhow::Result<u64> {
        let pragma = |name: &str| -> anyhow::Result<i64> {
            Ok(conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
        };
        let pages = pragma("page_count")? - pragma("freelist_count")?;
        Ok((pages * pragma("page_size")?) as u64)
    }

    /// Records a sale, durably, or says why not. A voucher recorded before is a duplicate
    /// when its content is the same and a conflict when it is not; neither changes anything.
    pub fn record(&self, entry: &Entry, now_ms: i64) -> Result<Recorded, RecordError> {
        let mut inner = self.lock();
        let pending = inner.pending;
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting a transaction")?;
        let known: Option<String> = tx
            .query_row(
                "SELECT digest FROM vouchers WHERE voucher = ?1",
                [&entry.voucher],
                |r| r.get(0),
            )
            .optional()
            .context("reading the voucher")?;
        match known {
            Some(digest) if digest == entry.digest => return Ok(Recorded::Duplicate),
            Some(_) => return Err(RecordError::Conflict(entry.voucher.clone())),
            None => {}
        }
        let lines = entry.events.len() as i64;
        if pending + lines > self.limits.pending_max as i64 {
            return Err(RecordError::Full(format!(
                "{pending} events wait for shelfsync (store.pending_max {})",
                self.limits.pending_max
            )));
        }
        let used = Self::used_bytes(&tx)?;
        if used >= self.limits.disk_max_bytes {
            return Err(RecordError::Full(format!(
                "the store holds {used} bytes (store.disk_max_bytes {})",
                self.limits.disk_max_bytes
            )));
        }
        tx.execute(
            "INSERT INTO vouchers (voucher, digest, created_ms) VALUES (?1, ?2, ?3)",
            params![entry.voucher, entry.digest, now_ms],
        )
        .context("inserting the voucher")?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (event_id, voucher, payload, state, created_ms, sku, d_on_hand)
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6)",
                )
                .context("preparing the event insert")?;
            for e in &entry.events {
                insert
                    .execute(params![
                        e.event_id,
                        entry.voucher,
                        e.payload,
                        now_ms,
                        e.sku,
                        e.d_on_hand
                    ])
                    .with_context(|| format!("inserting event {}", e.event_id))?;
            }
        }
        tx.commit().context("committing the sale")?;
        inner.pending += lines;
        Ok(Recorded::New)
    }

    /// Up to `limit` pending events after `after_seq`, in the order they were recorded.
    pub fn pending_after(&self, after_seq: i64, limit: usize) -> anyhow::Result<Vec<Pending>> {
        let inner = self.lock();
        let mut select = inner.conn.prepare_cached(
            "SELECT seq, event_id, payload, created_ms FROM events
             WHERE state = 'pending' AND seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = select.query_map(params![after_seq, limit as i64], |r| {
            Ok(Pending {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                payload: r.get(2)?,
                created_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether `event_id` is still pending (an ack may name any POS's event at the outlet).
    pub fn is_pending(&self, event_id: &str) -> anyhow::Result<bool> {
        let inner = self.lock();
        let found = inner
            .conn
            .query_row(
                "SELECT 1 FROM events WHERE event_id = ?1 AND state = 'pending'",
                [event_id],
                |_| Ok(()),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Settles the events shelfsync answered, in one transaction. Events not pending (settled
    /// before, or another POS's) are passed over. Returns those it settled.
    pub fn settle(&self, fates: &[(String, Fate)], now_ms: i64) -> anyhow::Result<Vec<Settled>> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        let mut settled = Vec::new();
        {
            let mut created = tx.prepare_cached(
                "SELECT created_ms FROM events WHERE event_id = ?1 AND state = 'pending'",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE events SET state = ?2, settled_ms = ?3, applied_seq = ?4, code = ?5, reason = ?6
                 WHERE event_id = ?1 AND state = 'pending'",
            )?;
            for (event_id, fate) in fates {
                let Some(created_ms) = created
                    .query_row([event_id], |r| r.get::<_, i64>(0))
                    .optional()?
                else {
                    continue;
                };
                let (state, seq, code, reason) = match fate {
                    Fate::Applied { seq } => ("applied", *seq, None, None),
                    Fate::Rejected { code, reason } => {
                        ("rejected", None, Some(code.as_str()), Some(reason.as_str()))
                    }
                };
                update.execute(params![event_id, state, now_ms, seq, code, reason])?;
                settled.push(Settled {
                    event_id: event_id.clone(),
                    created_ms,
                    applied: state == "applied",
                });
            }
        }
        tx.commit().context("committing settled events")?;
        inner.pending -= settled.len() as i64;
        Ok(settled)
    }

    /// Keeps the newest value of each SKU (by seq), in one transaction.
    pub fn put_stock(&self, values: &[StockValue], now_ms: i64) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO stock (sku, on_hand, reserved, available, seq, at, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand,
                   reserved = excluded.reserved, available = excluded.available,
                   seq = excluded.seq, at = excluded.at, updated_ms = excluded.updated_ms
                 WHERE excluded.seq >= stock.seq",
            )?;
            for v in values {
                upsert.execute(params![
                    v.sku,
                    v.on_hand,
                    v.reserved,
                    v.available,
                    v.seq,
                    v.at,
                    now_ms
                ])?;
            }
        }
        tx.commit().context("committing stock values")?;
        Ok(())
    }

    /// The stock of `sku` (or of every SKU) as the till should see it: shelfsync's latest
    /// value less this outlet's sales it does not hold yet (pending, or applied at a seq past
    /// the value's).
    pub fn local_stock(&self, sku: Option<&str>) -> anyhow::Result<Vec<LocalStock>> {
        let inner = self.lock();
        let mut select = inner.conn.prepare_cached(
            "SELECT s.sku, s.on_hand, s.reserved, s.available, s.seq, s.at, s.updated_ms,
               (SELECT COALESCE(SUM(e.d_on_hand), 0) FROM events e
                 WHERE e.sku = s.sku AND (e.state = 'pending'
                   OR (e.state = 'applied' AND CASE WHEN e.applied_seq IS NULL
                         THEN e.settled_ms > s.updated_ms ELSE e.applied_seq > s.seq END)))
             FROM stock s WHERE ?1 IS NULL OR s.sku = ?1 ORDER BY s.sku",
        )?;
        let rows = select.query_map([sku], |r| {
            Ok(LocalStock {
                value: StockValue {
                    sku: r.get(0)?,
                    on_hand: r.get(1)?,
                    reserved: r.get(2)?,
                    available: r.get(3)?,
                    seq: r.get(4)?,
                    at: r.get(5)?,
                },
                received_ms: r.get(6)?,
                d_local: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn stats(&self) -> anyhow::Result<Stats> {
        let inner = self.lock();
        let count = |state: &str| -> anyhow::Result<i64> {
            Ok(inner.conn.query_row(
                "SELECT COUNT(*) FROM events WHERE state = ?1",
                [state],
                |r| r.get(0),
            )?)
        };
        let oldest_pending_ms = inner
            .conn
            .query_row(
                "SELECT created_ms FROM events WHERE state = 'pending' ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let all = |table: &str| -> anyhow::Result<i64> {
            Ok(inner
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
        };
        Ok(Stats {
            pending: inner.pending,
            oldest_pending_ms,
            applied: count("applied")?,
            rejected: count("rejected")?,
            vouchers: all("vouchers")?,
            stock_values: all("stock")?,
            used_bytes: Self::used_bytes(&inner.conn)?,
            disk_bytes: self.disk_bytes(),
        })
    }

    /// The latest rejected events, newest first.
    pub fn rejected(&self, limit: usize) -> anyhow::Result<Vec<RejectedEvent>> {
        let inner = self.lock();
        let mut select = inner.conn.prepare_cached(
            "SELECT event_id, voucher, sku, code, reason, settled_ms FROM events
             WHERE state = 'rejected' ORDER BY settled_ms DESC, seq DESC LIMIT ?1",
        )?;
        let rows = select.query_map([limit as i64], |r| {
            Ok(RejectedEvent {
                event_id: r.get(0)?,
                voucher: r.get(1)?,
                sku: r.get(2)?,
                code: r.get(3)?,
                reason: r.get(4)?,
                settled_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes what is done: applied events past `store.keep_applied_secs`, rejected ones past
    /// `store.keep_rejected_secs`, and vouchers past the former with no event left; then gives
    /// the freed pages back to the file system. A batch at a time, so the webhook waits at
    /// most one batch for the lock.
    pub fn cleanup(&self, now_ms: i64) -> anyhow::Result<Cleaned> {
        let before = |secs: u64| now_ms - (secs as i64) * 1000;
        let l = &self.limits;
        let mut cleaned = Cleaned::default();
        for (state, until) in [
            ("applied", before(l.keep_applied_secs)),
            ("rejected", before(l.keep_rejected_secs)),
        ] {
            loop {
                let deleted = self.lock().conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events
                       WHERE state = ?1 AND settled_ms < ?2 LIMIT ?3)",
                    params![state, until, CLEANUP_BATCH],
                )?;
                cleaned.events += deleted as u64;
                if deleted < CLEANUP_BATCH as usize {
                    break;
                }
            }
        }
        loop {
            let deleted = self.lock().conn.execute(
                "DELETE FROM vouchers WHERE voucher IN (SELECT v.voucher FROM vouchers v
                   WHERE v.created_ms < ?1
                     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.voucher = v.voucher)
                   LIMIT ?2)",
                params![before(l.keep_vouchers_secs), CLEANUP_BATCH],
            )?;
            cleaned.vouchers += deleted as u64;
            if deleted < CLEANUP_BATCH as usize {
                break;
            }
        }
        // Free pages back to the file system, a step per lock.
        loop {
            let inner = self.lock();
            let free: i64 = inner
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            if free == 0 {
                break;
            }
            inner
                .conn
                .execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});"))?;
            let after: i64 = inner
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            if after >= free {
                break; // not a database in incremental auto_vacuum: nothing to give back
            }
        }
        Ok(cleaned)
    }
}

/// Runs `f` on the store off the async threads.
pub async fn blocking<R: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> R + Send + 'static,
) -> R {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .expect("a store call panicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::Sale;

    fn limits() -> StoreSettings {
        crate::settings::Settings::default().store
    }

    fn outlet() -> OutletId {
        OutletId::parse("outlet", "indore-vijay-nagar").unwrap()
    }

    /// A directory of the test's own, removed when dropped (a failing test too).
    struct Dir(PathBuf);

    impl std::ops::Deref for Dir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Dir {
        let d =
            std::env::temp_dir().join(format!("shelfsync-agent-store-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn entry(voucher: &str, lines: &[(&str, i64)]) -> Entry {
        let lines: Vec<_> = (lines.iter())
            .map(|(sku, qty)| serde_json::json!({"sku": sku, "qty": qty}))
            .collect();
        let body =
            serde_json::json!({"voucher": voucher, "at": "2026-12-01T10:00:00Z", "lines": lines});
        Sale::from_json(body.to_string().as_bytes())
            .unwrap()
            .entry(&outlet(), chrono::Utc::now())
    }

    #[test]
    fn the_store_commits_durably_in_wal_mode() {
        let d = dir();
        let store = Store::open(&d, &outlet(), limits()).unwrap();
        let inner = store.lock();
        let pragma = |name: &str| -> String {
            inner
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
        // 2 = FULL: the WAL is fsynced at every commit, so a power cut keeps what was answered.
        assert_eq!(pragma("synchronous"), "Integer(2)");
        // 2 = INCREMENTAL: the clean-up can give pages back.
        assert_eq!(pragma("auto_vacuum"), "Integer(2)");
        drop(inner);
    }

    #[test]
    fn a_sale_is_recorded_once_and_another_body_under_its_voucher_conflicts() {
        let d = dir();
        let store = Store::open(&d, &outlet(), limits()).unwrap();
        let sale = entry("INV/1", &[("a", 2), ("b", 1)]);
        assert_eq!(store.record(&sale, 1).unwrap(), Recorded::New);
        assert_eq!(store.record(&sale, 2).unwrap(), Recorded::Duplicate);
        let other = entry("INV/1", &[("a", 3)]);
        assert!(matches!(
            store.record(&other, 3),
            Err(RecordError::Conflict(_))
        ));
        let pending = store.pending_after(0, 10).unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(store.stats().unwrap().pending, 2);
    }

    #[test]
    fn what_was_committed_is_there_after_reopening_and_the_directory_is_held() {
        let d = dir();
        let store = Store::open(&d, &outlet(), limits()).unwrap();
        store.record(&entry("INV/1", &[("a", 2)]), 1).unwrap();
        assert!(
            Store::open(&d, &outlet(), limits()).is_err(),
            "one agent per store"
        );
        drop(store);
        let store = Store::open(&d, &outlet(), limits()).unwrap();
        assert_eq!(store.stats().unwrap().pending, 1);
        assert_eq!(store.pending_after(0, 10).unwrap().len(), 1);
        drop(store);
        let other = OutletId::parse("outlet", "indore-palasia").unwrap();
        let err = Store::open(&d, &other, limits()).err().unwrap().to_string();
        assert!(err.contains("indore-vijay-nagar"), "{err}");
    }

    #[test]
    fn settling_takes_only_pending_events_and_the_local_stock_counts_what_shelfsync_lacks() {
        let d = dir();
        let store = Store::open(&d, &outlet(), limits()).unwrap();
        let sale = entry("INV/1", &[("a", 2)]);
        let later = entry("INV/2", &[("a", 1)]);
        store.record(&sale, 1).unwrap();
        store.record(&later, 1).unwrap();
        let value = |seq, on_hand| StockValue {
            sku: "a".into(),
            on_hand,
            reserved: 0,
            available: on_hand,
            seq,
            at: "2026-12-01T10:00:00.000Z".into(),
        };
        store.put_stock(&[value(10, 20)], 5).unwrap();
        let local = &store.local_stock(Some("a")).unwrap()[0];
        assert_eq!(local.d_local, -3, "both sales are pending");
        let first = sale.events[0].event_id.clone();
        let settled = store
            .settle(
                &[
                    (first.clone(), Fate::Applied { seq: Some(11) }),
                    ("someone-elses".into(), Fate::Applied { seq: Some(12) }),
                ],
                6,
            )
            .unwrap();
        assert_eq!(settled.len(), 1);
        assert_eq!(
            store.local_stock(Some("a")).unwrap()[0].d_local,
            -3,
            "seq 11 is past the value's 10"
        );
        store.put_stock(&[value(11, 18)], 7).unwrap();
        assert_eq!(
            store.local_stock(Some("a")).unwrap()[0].d_local,
            -1,
            "the value holds the first sale"
        );
        store.put_stock(&[value(9, 99)], 8).unwrap();
        assert_eq!(
            store.local_stock(Some("a")).unwrap()[0].value.on_hand,
            18,
            "an older value is ignored"
        );
        let again = store
            .settle(&[(first, Fate::Applied { seq: Some(11) })], 9)
            .unwrap();
        assert!(again.is_empty(), "settled once");
        let rejected = Fate::Rejected {
            code: "too_old".into(),
            reason: "r".into(),
        };
        store
            .settle(&[(later.events[0].event_id.clone(), rejected)], 10)
            .unwrap();
        assert_eq!(store.local_stock(Some("a")).unwrap()[0].d_local, 0);
        let stats = store.stats().unwrap();
        assert_eq!((stats.pending, stats.applied, stats.rejected), (0, 1, 1));
        assert_eq!(store.rejected(10).unwrap()[0].code, "too_old");
    }

    #[test]
    fn a_line_applied_without_a_seq_counts_until_a_value_arrives_after_its_answer() {
        let d = dir();
        let store = Store::open(&d, &outlet(), limits()).unwrap();
        let sale = entry("INV/1", &[("a", 2)]);
        store.record(&sale, 1).unwrap();
        let value = |seq| StockValue {
            sku: "a".into(),
            on_hand: 20,
            reserved: 0,
            available: 20,
            seq,
            at: "2026-12-01T10:00:00.000Z".into(),
        };
        store.put_stock(&[value(10)], 100).unwrap();
        let id = sale.events[0].event_id.clone();
        store
            .settle(&[(id, Fate::Applied { seq: None })], 200)
            .unwrap();
        let d_local = |s: &Store| s.local_stock(Some("a")).unwrap()[0].d_local;
        assert_eq!(d_local(&store), -2, "the value came before the answer");
        store.put_stock(&[value(11)], 300).unwrap();
        assert_eq!(
            d_local(&store),
            0,
            "a value received after the answer holds it"
        );
    }

    #[test]
    fn past_disk_max_bytes_a_sale_is_refused_with_nothing_of_it_kept() {
        let d = dir();
        let mut l = limits();
        l.disk_max_bytes = 1024 * 1024;
        let store = Store::open(&d, &outlet(), l).unwrap();
        let lines: Vec<(String, i64)> = (0..50).map(|i| (format!("sku-{i}"), 1)).collect();
        let lines: Vec<(&str, i64)> = lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        let mut recorded = 0;
        let refused = loop {
            match store.record(&entry(&format!("INV/{recorded}"), &lines), 1) {
                Ok(Recorded::New) => recorded += 1,
                Err(RecordError::Full(why)) => break why,
                other => panic!("{other:?}"),
            }
            assert!(recorded < 10_000, "the bound never came");
        };
        assert!(refused.contains("store.disk_max_bytes"), "{refused}");
        assert!(recorded > 10, "{recorded} vouchers fit in 1 MiB");
        let stats = store.stats().unwrap();
        assert_eq!((stats.vouchers, stats.pending), (recorded, recorded * 50));
    }

    #[test]
    fn past_pending_max_a_sale_is_refused_and_cleanup_frees_only_what_is_settled_and_old() {
        let d = dir();
        let mut l = limits();
        l.pending_max = 3;
        l.keep_applied_secs = 10;
        l.keep_vouchers_secs = 10;
        let store = Store::open(&d, &outlet(), l).unwrap();
        let a = entry("INV/1", &[("a", 1), ("b", 1)]);
        store.record(&a, 1_000).unwrap();
        let b = entry("INV/2", &[("a", 1), ("b", 1)]);
        assert!(matches!(store.record(&b, 1_000), Err(RecordError::Full(_))));
        assert_eq!(
            store.stats().unwrap().vouchers,
            1,
            "nothing of the refused sale is kept"
        );
        let fates: Vec<_> = (a.events.iter())
            .map(|e| (e.event_id.clone(), Fate::Applied { seq: Some(1) }))
            .collect();
        store.settle(&fates, 2_000).unwrap();
        assert_eq!(
            store.cleanup(5_000).unwrap(),
            Cleaned::default(),
            "kept 10 s"
        );
        assert_eq!(store.record(&a, 6_000).unwrap(), Recorded::Duplicate);
        let cleaned = store.cleanup(13_000).unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                events: 2,
                vouchers: 1
            }
        );
        assert_eq!(store.record(&b, 14_000).unwrap(), Recorded::New);
    }
}
