//! `shelfsync-seed-ledger`: writes a large synthetic ledger straight into MongoDB, for
//! measuring rebuilds and reconciler passes (`make bench-rebuild`). Every document has the
//! shape the outlet scripts write, so it folds like a real ledger: per outlet an opening
//! `count` of every SKU, then counter sales, kitchen receipts and web holds that are
//! confirmed or cancelled, spread evenly over `--days` up to now, with a few holds left live.
//!
//! `--append N` adds N more counter sales and receipts after each outlet's last seq (the
//! ledger "after the checkpoint").

use clap::Parser;
use serde_json::json;
use shelfsync::catalogue::Catalogue;
use shelfsync::domain::{now_ms, OutletId, ReservationId};
use shelfsync::ledger::{Ledger, LedgerEntry};
use shelfsync::Settings;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "config.toml")]
    config: std::path::PathBuf,
    /// Documents in the whole ledger (all outlets).
    #[arg(long, default_value_t = 1_000_000)]
    documents: u64,
    /// SKUs per outlet.
    #[arg(long, default_value_t = 6400)]
    skus: u64,
    /// The history spans this many days up to now.
    #[arg(long, default_value_t = 60)]
    days: u64,
    /// Append this many documents per outlet after its last seq instead of seeding.
    #[arg(long)]
    append: Option<u64>,
    /// Drop the database first (it must not be the service's own).
    #[arg(long)]
    fresh: bool,
    /// Documents per `insert_many` (`make bench` uses the ledger writer's
    /// `ledger.batch_size_max` to measure the server's raw insert ceiling).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
}

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Writer {
    ledger: Ledger,
    buf: Vec<LedgerEntry>,
    batch: usize,
    written: u64,
}

impl Writer {
    async fn push(&mut self, doc: serde_json::Value) -> anyhow::Result<()> {
        self.buf.push(LedgerEntry::from_outbox(&doc.to_string())?);
        if self.buf.len() >= self.batch {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.buf.is_empty() {
            self.ledger.insert_batch(&self.buf).await?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

fn movement(
    outlet: &OutletId,
    seq: u64,
    at_ms: i64,
    kind: &str,
    sku: &str,
    d_on_hand: i64,
    event_id: &str,
) -> serde_json::Value {
    json!({"outlet": outlet, "seq": seq, "kind": kind, "at_ms": at_ms,
        "lines": [{"sku": sku, "d_on_hand": d_on_hand, "d_reserved": 0}],
        "event_id": event_id, "event_key": event_id, "body_hash": format!("{:032x}", seq),
        "qty": d_on_hand.abs(), "event_at_ms": at_ms})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(&args.config)?;
    let catalogue = Catalogue::load(&settings.catalogue)?;
    let ledger = Ledger::connect(&settings.mongo).await?;
    if args.fresh {
        let client = mongodb::Client::with_uri_str(settings.mongo.uri.expose()).await?;
        client.database(&settings.mongo.database).drop().await?;
    }
    ledger.ensure_indexes().await?;
    let outlets: Vec<OutletId> = catalogue.outlets.iter().map(|o| o.id.clone()).collect();
    let sku = |i: u64| format!("bench-sku-{i:05}");
    let started = std::time::Instant::now();
    let mut w = Writer {
        ledger: ledger.clone(),
        buf: Vec::new(),
        batch: args.batch.max(1),
        written: 0,
    };
    let now = now_ms();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    if let Some(per_outlet) = args.append {
        for outlet in &outlets {
            let first = ledger.max_seq(outlet).await? + 1;
            for seq in first..first + per_outlet {
                let s = sku(rng.below(args.skus));
                let (kind, d) = match rng.below(10) {
                    0 => ("receipt", 50),
                    _ => ("sale_counter", -1),
                };
                let event = format!("append-{outlet}-{seq}");
                w.push(movement(outlet, seq, now, kind, &s, d, &event))
                    .await?;
            }
        }
        w.flush().await?;
        println!(
            "appended {} documents in {:.1} s",
            w.written,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let per_outlet = args.documents / outlets.len() as u64;
    let span_ms = (args.days * 86_400_000) as i64;
    for outlet in &outlets {
        anyhow::ensure!(
            ledger.max_seq(outlet).await? == 0,
            "the ledger of {outlet} is not empty: seed an empty database (SHELFSYNC__MONGO__DATABASE)"
        );
        let at =
            |seq: u64| now - span_ms + (span_ms as f64 * seq as f64 / per_outlet as f64) as i64;
        let mut seq = 0;
        for i in 0..args.skus.min(per_outlet) {
            seq += 1;
            let event = format!("open-{outlet}-{i}");
            w.push(movement(
                outlet,
                seq,
                at(seq),
                "count",
                &sku(i),
                500,
                &event,
            ))
            .await?;
        }
        while seq < per_outlet {
            let s = sku(rng.below(args.skus));
            let roll = rng.below(10);
            if roll < 3 && seq + 2 <= per_outlet {
                // A web hold, then its end: confirmed or cancelled. The last few stay live.
                let id = ReservationId::new(outlet);
                let qty = 1 + rng.below(3) as i64;
                seq += 1;
                let held_at = at(seq);
                w.push(json!({"outlet": outlet, "seq": seq, "kind": "reservation_held", "at_ms": held_at,
                    "lines": [{"sku": s, "d_on_hand": 0, "d_reserved": qty}],
                    "reservation": id, "channel": "web", "expires_at_ms": held_at + 90_000,
                    "idempotency_key": format!("idem-{outlet}-{seq}"), "body_hash": format!("{seq:032x}")}))
                    .await?;
                if seq + 20 >= per_outlet {
                    continue;
                }
                seq += 1;
                let doc = if roll < 2 {
                    json!({"outlet": outlet, "seq": seq, "kind": "sale_web", "at_ms": at(seq),
                        "lines": [{"sku": s, "d_on_hand": -qty, "d_reserved": -qty}],
                        "reservation": id, "channel": "web", "payment_ref": format!("pay-{seq}")})
                } else {
                    json!({"outlet": outlet, "seq": seq, "kind": "reservation_released", "at_ms": at(seq),
                        "lines": [{"sku": s, "d_on_hand": 0, "d_reserved": -qty}],
                        "reservation": id, "channel": "web", "reason": "cancelled"})
                };
                w.push(doc).await?;
            } else {
                seq += 1;
                let (kind, d) = match roll {
                    3 => ("receipt", 40),
                    _ => ("sale_counter", -1),
                };
                let event = format!("ev-{outlet}-{seq}");
                w.push(movement(outlet, seq, at(seq), kind, &s, d, &event))
                    .await?;
            }
        }
        w.flush().await?;
        println!(
            "{outlet}: {seq} documents; {} written in {:.1} s",
            w.written,
            started.elapsed().as_secs_f64()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} documents in {secs:.1} s: {:.0} documents/s",
        w.written,
        w.written as f64 / secs.max(0.001)
    );
    Ok(())
}
