//! Every Redis key of shelfsync is spelled here and nowhere else.
//!
//! All keys of one outlet carry the hash tag `{outlet}` so that one script can touch them
//! all on Redis Cluster. The prefix stands before the tag and may not contain braces.

use crate::domain::{digest, OutletId};

/// The keys of one outlet, in the order the scripts expect them as `KEYS[1..]`.
#[derive(Debug, Clone)]
pub struct OutletKeys {
    /// hash sku → units on hand
    pub on_hand: String,
    /// hash sku → units held by live reservations
    pub reserved: String,
    /// hash sku → outlet seq of the SKU's last change
    pub sku_seq: String,
    /// string: the outlet's sequence number (the presence marker of the outlet's state)
    pub seq: String,
    /// hash reservation id → reservation JSON
    pub reservations: String,
    /// hash Idempotency-Key → {id, hash}
    pub idempotency: String,
    /// hash event key → {hash, result}
    pub events: String,
    /// stream of ledger documents, entry id `{seq}-0`
    pub outbox: String,
    /// sorted set of what to forget and when (ms): `r:{id}`, `i:{key}`, `e:{key}`
    pub forget: String,
    /// hash sku → JSON array of its lots, earliest expiry first (`domain::Lot`)
    pub lots: String,
    /// string `"{node} {epoch}"` with an expiry: which process owns the outlet (the lease)
    pub lease: String,
    /// string: the outlet's fencing token, raised by every acquisition of the lease and never
    /// lowered; every script that writes the outlet checks it (see ownership.rs)
    pub epoch: String,
    /// hash `{kind}:{sku}` → the raised alert's JSON (alerts.rs): present while it is raised
    pub alerts: String,
}

impl OutletKeys {
    pub fn new(prefix: &str, outlet: &OutletId) -> Self {
        let key = |name: &str| format!("{prefix}:{{{outlet}}}:{name}");
        Self {
            on_hand: key("on_hand"),
            reserved: key("reserved"),
            sku_seq: key("sku_seq"),
            seq: key("seq"),
            reservations: key("res"),
            idempotency: key("idem"),
            events: key("events"),
            outbox: key("outbox"),
            forget: key("forget"),
            lots: key("lots"),
            lease: key("lease"),
            epoch: key("epoch"),
            alerts: key("alerts"),
        }
    }

    /// The keys as the scripts take them (the lease and the epoch are not part of the
    /// outlet's state: a restore leaves them alone).
    pub fn all(&self) -> [&str; 10] {
        [
            &self.on_hand,
            &self.reserved,
            &self.sku_seq,
            &self.seq,
            &self.reservations,
            &self.idempotency,
            &self.events,
            &self.outbox,
            &self.forget,
            &self.lots,
        ]
    }
}

/// The Pub/Sub channel every outlet batch that changed something publishes its commit to
/// (apply_batch.lua); the processes that do not own the outlet follow it (follower.rs).
pub fn commits(prefix: &str) -> String {
    format!("{prefix}:commits")
}

/// The Pub/Sub channel an outlet's owner publishes each raised or cleared alert to; the
/// other processes pass it to their stream clients (follower.rs).
pub fn alerts(prefix: &str) -> String {
    format!("{prefix}:alerts")
}

/// The hash outlet → units sold in one minute (since the epoch), kept two hours
/// (war_room.rs).
pub fn sales_minute(prefix: &str, minute: i64) -> String {
    format!("{prefix}:sales_min:{minute}")
}

/// The hash `{outlet}/{sku}` → the head cook's number for the next window (kitchen.rs).
pub fn kitchen_cook(prefix: &str) -> String {
    format!("{prefix}:kitchen:cook")
}

/// The hash node id → the URL of its HTTP API, for requests forwarded to an outlet's owner.
pub fn addresses(prefix: &str) -> String {
    format!("{prefix}:addresses")
}

/// A forwarded request's signature, once taken (kept for a minute against replays).
pub fn used_signature(prefix: &str, signature: &str) -> String {
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(signature.as_bytes()))
    };
    format!("{prefix}:forwarded:{digest}")
}

/// The sorted set of the live processes (member: node id, score: last heartbeat in ms).
pub fn members(prefix: &str) -> String {
    format!("{prefix}:members")
}

/// The sorted set of a WhatsApp sender's holds (member: reservation id, score: its expiry
/// in ms), which the per-sender caps count (whatsapp/caps.rs); it expires with its last hold.
pub fn whatsapp_sender_holds(prefix: &str, sender: &str) -> String {
    format!("{prefix}:wa-sender:{}:holds", sender_part(sender))
}

/// The short lease of a WhatsApp sender while one process decides an order of theirs
/// against the caps (so that two processes cannot both take the last open slot).
pub fn whatsapp_sender_lease(prefix: &str, sender: &str) -> String {
    format!("{prefix}:wa-sender:{}:lease", sender_part(sender))
}

/// A sender as WhatsApp gives it (digits) as is, readable; anything else by its digest, so
/// that no character of it (a brace would make a hash tag) shapes the key.
fn sender_part(sender: &str) -> String {
    let digits = !sender.is_empty() && sender.len() <= 32;
    if digits && sender.bytes().all(|b| b.is_ascii_digit()) {
        sender.to_owned()
    } else {
        format!("d{}", digest(sender.as_bytes()))
    }
}

/// Which kind of client key a claim is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// An `Idempotency-Key` of a reservation request.
    Reservation,
    /// The `event_id` of a movement.
    Event,
}

/// The short-lived lease of a client key while a routed request moves its claim.
pub fn lease(prefix: &str, kind: ClaimKind, key: &str) -> String {
    client_key(prefix, "lease", kind, key)
}

/// The chain-wide claim of a client key by one outlet (not outlet-tagged: it spans outlets).
pub fn claim(prefix: &str, kind: ClaimKind, key: &str) -> String {
    client_key(prefix, "claim", kind, key)
}

fn client_key(prefix: &str, what: &str, kind: ClaimKind, key: &str) -> String {
    let tag = match kind {
        ClaimKind::Reservation => "r",
        ClaimKind::Event => "e",
    };
    format!("{prefix}:{what}:{tag}:{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_outlet_shares_its_hash_tag() {
        let outlet = OutletId::parse("o", "bhopal-mp-nagar").unwrap();
        let keys = OutletKeys::new("t1", &outlet);
        for k in keys.all().into_iter().chain([&*keys.lease, &*keys.epoch]) {
            assert!(k.starts_with("t1:{bhopal-mp-nagar}:"), "{k}");
        }
    }

    #[test]
    fn a_whatsapp_sender_is_spelled_by_its_digits_or_else_its_digest() {
        assert_eq!(
            whatsapp_sender_holds("t1", "919800000001"),
            "t1:wa-sender:919800000001:holds"
        );
        for odd in ["", "{919800000001}", "91 98", "9".repeat(33).as_str()] {
            let key = whatsapp_sender_lease("t1", odd);
            assert!(key.starts_with("t1:wa-sender:d"), "{key}");
            assert!(!key.contains(['{', '}', ' ']), "{key}");
        }
        assert_ne!(
            whatsapp_sender_holds("t1", ""),
            whatsapp_sender_holds("t1", "x")
        );
    }
}
