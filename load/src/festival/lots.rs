//! The lots part of the audit: no unit of an expired lot was held or sold, nothing was taken
//! from a lot after its expiry, and each lot's expiry is in the ledger once.
//!
//! It reads only the ledger's own record of each change: a line's `lots[]` names every lot a
//! document moved, with the lot's `expires_at`. A hold (`d_held > 0`) must take units of a lot
//! that is still good when the hold ends (`expires_at_ms`, the hold's deadline); a sale or a
//! transfer (`d_qty < 0`) units of a lot still good at the document's `at_ms`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// What the lots audit found over the run's documents.
#[derive(Debug, Default)]
pub struct LotAudit {
    /// Units of lots taken into holds, by the run's documents.
    pub units_held: i64,
    /// Units of lots sold or sent away, by the run's documents.
    pub units_out: i64,
    /// Receipts of the run the service made a lot of by the SKU's shelf life (the lot is
    /// named by the receipt's `event_id`).
    pub shelf_life_lots: u64,
    /// `expiry` documents of the run, and the units they wrote off.
    pub expiries: u64,
    pub units_expired: i64,
    /// Holds that took a unit of a lot expiring before the hold ends, or already expired.
    pub expired_held: Vec<Value>,
    /// Sales and transfers that took a unit of a lot past its expiry.
    pub expired_sold: Vec<Value>,
    /// Lots taken from after their `expiry` document.
    pub taken_after_expiry: Vec<Value>,
    /// Lots with more than one `expiry` document.
    pub expired_twice: Vec<Value>,
}

impl LotAudit {
    pub fn passed(&self) -> bool {
        self.expired_held.is_empty()
            && self.expired_sold.is_empty()
            && self.taken_after_expiry.is_empty()
            && self.expired_twice.is_empty()
    }

    pub fn report(&self) -> Value {
        let few = |v: &[Value]| v.iter().take(20).cloned().collect::<Vec<_>>();
        json!({
            "no_expired_unit_held_or_sold": self.passed(),
            "lot_units_held": self.units_held,
            "lot_units_out": self.units_out,
            "shelf_life_lots": self.shelf_life_lots,
            "lot_expiries": self.expiries,
            "lot_units_expired": self.units_expired,
            "expired_held": few(&self.expired_held),
            "expired_sold": few(&self.expired_sold),
            "taken_after_expiry": few(&self.taken_after_expiry),
            "expired_twice": few(&self.expired_twice),
        })
    }

    /// Audits one outlet's documents (in seq order, as `/v1/ledger` gives them); only those
    /// after `after_seq` (the run's) are counted, all of them tell which lots expired.
    pub fn outlet(&mut self, entries: &[Value], after_seq: u64) {
        // (sku, lot) → the seq of its expiry document.
        let mut expired: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut twice = BTreeSet::new();
        for e in entries {
            let seq = e["seq"].as_u64().unwrap_or(0);
            let in_run = seq > after_seq;
            let kind = e["kind"].as_str().unwrap_or_default();
            let at_ms = e["at_ms"].as_i64().unwrap_or(0);
            let hold_ends = e["expires_at_ms"].as_i64();
            for line in e["lines"].as_array().into_iter().flatten() {
                let sku = line["sku"].as_str().unwrap_or_default();
                for d in line["lots"].as_array().into_iter().flatten() {
                    let lot = d["lot"].as_str().unwrap_or_default().to_owned();
                    let expires_at = d["expires_at"].as_i64().unwrap_or(i64::MIN);
                    let (d_qty, d_held) = (
                        d["d_qty"].as_i64().unwrap_or(0),
                        d["d_held"].as_i64().unwrap_or(0),
                    );
                    let key = (sku.to_owned(), lot.clone());
                    if in_run && kind == "receipt" && e["event_id"].as_str() == Some(&lot) {
                        self.shelf_life_lots += 1;
                    }
                    let what = || {
                        json!({"outlet": e["outlet"], "seq": seq, "kind": kind, "sku": sku,
                            "lot": lot, "expires_at_ms": expires_at, "at_ms": at_ms,
                            "d_qty": d_qty, "d_held": d_held})
                    };
                    if kind == "expiry" {
                        if expired.insert(key.clone(), seq).is_some() && twice.insert(key) {
                            self.expired_twice.push(what());
                        }
                        if in_run {
                            self.expiries += 1;
                            self.units_expired -= d_qty;
                        }
                        continue;
                    }
                    if !in_run {
                        continue;
                    }
                    let takes = d_held > 0 || d_qty < 0;
                    if takes && expired.contains_key(&key) {
                        self.taken_after_expiry.push(what());
                    }
                    if d_held > 0 {
                        self.units_held += d_held;
                        let good_until = hold_ends.unwrap_or(at_ms).max(at_ms);
                        if expires_at <= good_until {
                            self.expired_held.push(what());
                        }
                    }
                    let sold = matches!(kind, "sale_counter" | "sale_web" | "transfer_out");
                    if d_qty < 0 && sold {
                        self.units_out -= d_qty;
                        if expires_at <= at_ms {
                            self.expired_sold.push(what());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(seq: u64, kind: &str, at_ms: i64, lots: Value) -> Value {
        json!({"outlet": "o", "seq": seq, "kind": kind, "at_ms": at_ms,
            "lines": [{"sku": "s", "d_on_hand": 0, "d_reserved": 0, "lots": lots}]})
    }

    fn lot(d_qty: i64, d_held: i64) -> Value {
        json!([{"lot": "L", "made_at": 0, "expires_at": 1_000, "d_qty": d_qty, "d_held": d_held}])
    }

    #[test]
    fn a_hold_outliving_its_lot_and_a_sale_after_expiry_are_found() {
        let mut hold = doc(2, "reservation_held", 500, lot(0, 1));
        hold["expires_at_ms"] = json!(1_500);
        let entries = [
            doc(1, "receipt", 0, lot(5, 0)),
            hold,
            doc(3, "sale_counter", 1_000, lot(-1, 0)),
        ];
        let mut a = LotAudit::default();
        a.outlet(&entries, 0);
        assert_eq!((a.expired_held.len(), a.expired_sold.len()), (1, 1));
        assert!(!a.passed());
    }

    #[test]
    fn a_clean_run_passes_and_a_second_expiry_or_a_later_take_fails() {
        let mut hold = doc(2, "reservation_held", 100, lot(0, 2));
        hold["expires_at_ms"] = json!(900);
        let clean = [
            doc(1, "receipt", 0, lot(5, 0)),
            hold,
            doc(3, "sale_web", 800, lot(-2, -2)),
            doc(4, "expiry", 1_000, lot(-3, 0)),
        ];
        let mut a = LotAudit::default();
        a.outlet(&clean, 0);
        assert!(a.passed(), "{a:?}");
        assert_eq!(
            (a.units_held, a.units_out, a.expiries, a.units_expired),
            (2, 2, 1, 3)
        );

        let mut twice = clean.to_vec();
        twice.push(doc(5, "expiry", 1_001, lot(-1, 0)));
        twice.push(doc(6, "wastage", 1_002, lot(-1, 0)));
        let mut a = LotAudit::default();
        a.outlet(&twice, 0);
        assert_eq!((a.expired_twice.len(), a.taken_after_expiry.len()), (1, 1));
        // Documents before the run tell which lots expired, but are not counted.
        let mut a = LotAudit::default();
        a.outlet(&clean, 4);
        assert!(a.passed());
        assert_eq!(a.expiries, 0);
    }
}
