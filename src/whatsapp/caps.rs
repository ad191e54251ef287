//! Per-sender caps on WhatsApp holds: how many holds one sender may have open and how many
//! units between them, so that one message, or one number, cannot lock a shelf for
//! `whatsapp.ttl_secs`. A sender of `whatsapp.senders` gets `sender_*_max`; any other sender
//! the small `unknown_sender_*_max`, or nothing at all under `unknown_sender = "refuse"`.
//!
//! A sender's holds are a sorted set in Redis (reservation id by expiry; `keys.rs`), so the
//! count survives a restart and is shared by every process. Expired members are trimmed on
//! each read, and each member still in time is read back from its outlet's records and
//! counted only while its cart is `held` (followed when re-routed): a confirmed or
//! cancelled hold stops counting at once, without the confirm or cancel knowing of caps.

use crate::checkout::REROUTE_HOPS_MAX;
use crate::domain::{now_ms, Line, ReservationId, ReservationStatus};
use crate::settings::{UnknownSenderPolicy, WhatsAppSettings};
use crate::store::RedisStore;

/// Why an order was refused: the `reason` of its record and of
/// `shelfsync_whatsapp_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A sender of `whatsapp.senders` past its open holds or units.
    SenderCap,
    /// A sender not in it: past the unknown sender's caps, or refused by policy.
    UnknownSender,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SenderCap => "sender_cap",
            Refusal::UnknownSender => "unknown_sender",
        }
    }
}

/// What one sender may have open at once, and the refusal when an order would pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub open_holds_max: usize,
    pub units_max: i64,
    pub refusal: Refusal,
}

/// A sender's holds still open, and their units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Open {
    pub holds: usize,
    pub units: i64,
}

impl Caps {
    /// The caps of `sender`; `None` when its orders are refused whatever they hold (a sender
    /// not in `whatsapp.senders` under `unknown_sender = "refuse"`).
    pub fn of(wa: &WhatsAppSettings, sender: &str) -> Option<Self> {
        if wa.senders.contains_key(sender) {
            return Some(Self {
                open_holds_max: wa.sender_open_holds_max,
                units_max: wa.sender_units_max,
                refusal: Refusal::SenderCap,
            });
        }
        match wa.unknown_sender {
            UnknownSenderPolicy::Refuse => None,
            UnknownSenderPolicy::Cap => Some(Self {
                open_holds_max: wa.unknown_sender_open_holds_max,
                units_max: wa.unknown_sender_units_max,
                refusal: Refusal::UnknownSender,
            }),
        }
    }

    /// Whether one more hold of `units` fits beside what the sender has open.
    pub fn fits(&self, open: Open, units: i64) -> bool {
        open.holds < self.open_holds_max && open.units.saturating_add(units) <= self.units_max
    }
}

/// The units of a cart.
pub fn units(lines: &[Line]) -> i64 {
    lines.iter().map(|l| l.qty.get()).sum()
}

/// What `sender` has open now. Holds found ended are forgotten on the way.
pub async fn open(store: &RedisStore, sender: &str) -> anyhow::Result<Open> {
    let mut open = Open::default();
    let mut ended = Vec::new();
    for id in store.sender_holds(sender, now_ms()).await? {
        match held_units(store, &id).await? {
            Some(units) => {
                open.holds += 1;
                open.units += units;
            }
            None => ended.push(id),
        }
    }
    // Best effort: what is not forgotten now is found ended again by the next read.
    if let Err(e) = store.forget_sender_holds(sender, &ended).await {
        tracing::warn!(error = %format!("{e:#}"), "forgetting a WhatsApp sender's ended holds failed");
    }
    Ok(open)
}

/// The units of hold `id` while its cart is held, at its outlet or where it was re-routed
/// to; `None` once it ended (confirmed, cancelled, expired, or no longer on record).
async fn held_units(store: &RedisStore, id: &ReservationId) -> anyhow::Result<Option<i64>> {
    let mut id = id.clone();
    let mut cart = 0;
    for _ in 0..REROUTE_HOPS_MAX {
        let (res, seq) = store.reservation(&store.keys(&id.outlet()), &id).await?;
        let Some(res) = res else {
            // Not found at an outlet whose state is gone (Redis restarted, a restore under
            // way) is no answer: the hold may be live.
            anyhow::ensure!(seq > 0, "outlet {} has no state in Redis", id.outlet());
            return Ok(None);
        };
        cart = units(&res.lines);
        match (res.status, res.rerouted_to) {
            (ReservationStatus::Held, _) => return Ok(Some(cart)),
            (ReservationStatus::Rerouted, Some(to)) => id = to,
            _ => return Ok(None),
        }
    }
    // Moved more often than a cancel follows (the same cart each time): counted until its
    // time runs out, when the read trims it by its expiry.
    Ok(Some(cart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_fits_below_both_caps_only() {
        let caps = Caps {
            open_holds_max: 3,
            units_max: 50,
            refusal: Refusal::SenderCap,
        };
        let open = |holds, units| Open { holds, units };
        assert!(caps.fits(open(0, 0), 50));
        assert!(caps.fits(open(2, 40), 10));
        assert!(!caps.fits(open(0, 0), 51), "one order past the units");
        assert!(!caps.fits(open(2, 40), 11));
        assert!(!caps.fits(open(3, 3), 1), "a fourth open hold");
        assert!(!caps.fits(open(0, 0), i64::MAX));
    }
}
