//! Movements: counter sales, receipts, wastage, returns, adjustments, counts and transfers,
//! from HTTP or MQTT, each answered once its ledger document is durable.

use actix::Addr;
use serde::{Deserialize, Serialize};

use crate::actors::outlet::{ApplyMovement, Committed};
use crate::actors::OutletActor;
use crate::catalogue::Catalogue;
use crate::catalogue::SHELF_LIFE_DAYS_MAX;
use crate::checkout::reroute::{relieve, Relief};
use crate::domain::{
    parse_lot_id, EventId, Invalid, LedgerKind, LotDelta, LotSpec, Movement, MovementKind,
    OutletId, SentLot, Sku, TRANSFER_IN_PREFIX,
};
use crate::error::Error;
use crate::keys::ClaimKind;
use crate::services::Services;
use crate::settings::MovementSettings;
use crate::store::{By, LotIn, MovementResult, Outcome};

/// A movement as the client sends it (also the MQTT payload, with `outlet` from the topic;
/// the outlet agent writes its POS messages with it).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MovementRequest {
    pub event_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlet: Option<String>,
    pub sku: String,
    pub kind: String,
    pub qty: i64,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_outlet: Option<String>,
    /// The lot the units come from (sale, wastage, transfer, a negative adjustment) or go into
    /// (receipt, return, a positive adjustment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// When the lot coming in was made (RFC 3339; default `at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_at: Option<String>,
    /// When the lot coming in expires (RFC 3339; default `made_at` plus the SKU's shelf life).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

fn rfc3339(field: &str, value: &str) -> Result<chrono::DateTime<chrono::Utc>, Invalid> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| Invalid::new(field, "must be an RFC 3339 time, e.g. 2025-08-09T09:42:00Z"))
}

impl MovementRequest {
    /// Validates every field into a `Movement`.
    pub fn parse(
        self,
        catalogue: &Catalogue,
        limits: &MovementSettings,
    ) -> Result<Movement, Invalid> {
        let event_id = EventId::parse("event_id", &self.event_id)?;
        let outlet =
            (self.outlet.as_deref()).ok_or_else(|| Invalid::new("outlet", "is required"))?;
        let outlet = catalogue.known_outlet("outlet", outlet)?;
        let kind = MovementKind::parse("kind", &self.kind)?;
        // A retired SKU takes no new stock; what is left of it still moves out.
        let sku = match kind {
            MovementKind::Receipt => catalogue.active_sku("sku", &self.sku)?,
            _ => catalogue.known_sku("sku", &self.sku)?,
        };
        let max = limits.qty_max;
        let qty_ok = match kind {
            MovementKind::Adjustment => {
                self.qty != 0 && self.qty.unsigned_abs() <= max.unsigned_abs()
            }
            MovementKind::Count => (0..=max).contains(&self.qty),
            _ => (1..=max).contains(&self.qty),
        };
        if !qty_ok {
            let rule = match kind {
                MovementKind::Adjustment => format!("must be non-zero, between -{max} and {max}"),
                MovementKind::Count => format!("must be the counted on_hand, 0 to {max}"),
                _ => format!("must be 1 to {max}"),
            };
            return Err(Invalid::new("qty", rule));
        }
        let at = rfc3339("at", &self.at)?;
        // A POS may send late (offline queues), but not older than the `event_id`s are
        // remembered (a replay would apply again), and never from the future: a clock that is
        // far ahead is a broken device. The bounds also keep times inside the ledger's
        // millisecond fields.
        let age = chrono::Utc::now().signed_duration_since(at).num_seconds();
        let age_max = i64::try_from(limits.at_age_max_secs).unwrap_or(i64::MAX);
        let ahead_max = i64::try_from(limits.at_ahead_max_secs).unwrap_or(i64::MAX);
        if age > age_max {
            return Err(Invalid::new(
                "at",
                format!(
                    "too_old: more than {age_max} s before the service's clock \
                     (movements.at_age_max_secs); a manager records what it changed as an adjustment or a count now"
                ),
            ));
        }
        if age < -ahead_max {
            return Err(Invalid::new(
                "at",
                format!(
                    "in_future: more than {ahead_max} s ahead of the service's clock \
                     (movements.at_ahead_max_secs); check the device's clock"
                ),
            ));
        }
        if let Some(note) = &self.note {
            if note.len() > limits.note_len_max {
                return Err(Invalid::new(
                    "note",
                    format!("must be at most {} bytes", limits.note_len_max),
                ));
            }
        }
        let lot = self.lot_spec(catalogue, limits, &event_id, &sku, kind, at)?;
        let to_outlet = match (kind, self.to_outlet) {
            (MovementKind::Transfer, Some(to)) => {
                let to = catalogue.known_outlet("to_outlet", &to)?;
                if to == outlet {
                    return Err(Invalid::new("to_outlet", "must differ from outlet"));
                }
                Some(to)
            }
            (MovementKind::Transfer, None) => {
                return Err(Invalid::new("to_outlet", "is required for a transfer"))
            }
            (_, Some(_)) => return Err(Invalid::new("to_outlet", "is only for a transfer")),
            (_, None) => None,
        };
        Ok(Movement {
            event_id,
            outlet,
            sku,
            kind,
            qty: self.qty,
            at,
            note: self.note,
            to_outlet,
            sent_lot: SentLot {
                lot: self.lot,
                made_at: self.made_at,
                expires_at: self.expires_at,
            },
            lot,
        })
    }

    /// The movement's lot. Units coming in go into the lot named, or into a lot of their own
    /// (its id the `event_id`) when times are given or a receipt's SKU has a shelf life; its
    /// `made_at` defaults to `at`, its `expires_at` to `made_at` plus the shelf life (the
    /// outlet's script refuses one already past, after its replay check, so that a retry of a
    /// receipt answers as the first time did). Units going out may name the lot they come
    /// from. A count names none.
    fn lot_spec(
        &self,
        catalogue: &Catalogue,
        limits: &MovementSettings,
        event_id: &EventId,
        sku: &Sku,
        kind: MovementKind,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<LotSpec>, Invalid> {
        let id = (self.lot.as_deref())
            .map(|id| parse_lot_id("lot", id))
            .transpose()?;
        let times = self.made_at.is_some() || self.expires_at.is_some();
        let incoming = match kind {
            MovementKind::Receipt | MovementKind::Return => true,
            MovementKind::Adjustment => self.qty > 0,
            MovementKind::Count => {
                if id.is_some() || times {
                    return Err(Invalid::new(
                        if id.is_some() { "lot" } else { "made_at" },
                        "a count sets on_hand whole and names no lot: receive, waste or adjust a lot instead",
                    ));
                }
                return Ok(None);
            }
            _ => false,
        };
        if !incoming {
            if times {
                let field = if self.made_at.is_some() {
                    "made_at"
                } else {
                    "expires_at"
                };
                return Err(Invalid::new(field, "is only for units coming in"));
            }
            return Ok(id.map(|id| LotSpec {
                id,
                made_at: None,
                expires_at: None,
            }));
        }
        let shelf_life_days = catalogue.sku(sku).and_then(|s| s.shelf_life_days);
        let own_lot = times || (kind == MovementKind::Receipt && shelf_life_days.is_some());
        let Some(id) = id.or_else(|| own_lot.then(|| event_id.to_string())) else {
            return Ok(None);
        };
        let made_at = match &self.made_at {
            Some(t) => rfc3339("made_at", t)?,
            None => at,
        };
        let expires_at = match (&self.expires_at, shelf_life_days) {
            (Some(t), _) => rfc3339("expires_at", t)?,
            (None, Some(days)) => made_at + chrono::Duration::days(i64::from(days)),
            (None, None) => {
                return Err(Invalid::new(
                    "expires_at",
                    format!("is required: {sku} has no shelf life to count it from"),
                ))
            }
        };
        // As `at`: a device clock far ahead is broken.
        let ahead_max = i64::try_from(limits.at_ahead_max_secs).unwrap_or(i64::MAX);
        if made_at > chrono::Utc::now() + chrono::Duration::seconds(ahead_max) {
            return Err(Invalid::new(
                "made_at",
                format!("is more than {ahead_max} s ahead of the service's clock (movements.at_ahead_max_secs)"),
            ));
        }
        if expires_at <= made_at {
            return Err(Invalid::new("expires_at", "must be after made_at"));
        }
        if expires_at > made_at + chrono::Duration::days(i64::from(SHELF_LIFE_DAYS_MAX)) {
            return Err(Invalid::new(
                "expires_at",
                format!("is more than {SHELF_LIFE_DAYS_MAX} days after made_at"),
            ));
        }
        Ok(Some(LotSpec {
            id,
            made_at: Some(made_at.timestamp_millis()),
            expires_at: Some(expires_at.timestamp_millis()),
        }))
    }
}

pub(crate) fn ledger_kind(kind: MovementKind) -> LedgerKind {
    match kind {
        MovementKind::SaleCounter => LedgerKind::SaleCounter,
        MovementKind::Receipt => LedgerKind::Receipt,
        MovementKind::Wastage => LedgerKind::Wastage,
        MovementKind::Return => LedgerKind::Return,
        MovementKind::Adjustment => LedgerKind::Adjustment,
        MovementKind::Count => LedgerKind::Count,
        MovementKind::Transfer => LedgerKind::TransferOut,
    }
}

/// Applies one half of a movement at one outlet and waits until it is durable. The flag is
/// true when this call applied it (false for a replay).
async fn apply_half(
    services: &Services,
    actor: &Addr<OutletActor>,
    outlet: &OutletId,
    msg: ApplyMovement,
) -> Result<(MovementResult, bool), Error> {
    let kind = msg.kind;
    let Committed {
        outcome,
        generation,
        ..
    } = actor.send(msg).await??;
    let (result, fresh) = settle(services, kind, outcome)?;
    (services.shared.durable)
        .wait(outlet, result.seq, generation, services.durable_wait())
        .await?;
    Ok((result, fresh))
}

/// What the outlet decided of a movement, counted (`shelfsync_movements_total`): its result
/// and whether it was applied now (false: a replay), or why it was refused.
pub(crate) fn settle(
    services: &Services,
    kind: LedgerKind,
    outcome: Outcome,
) -> Result<(MovementResult, bool), Error> {
    let count = |o: &str| {
        services
            .shared
            .metrics
            .movements
            .with_label_values(&[kind.as_str(), o])
            .inc()
    };
    match outcome {
        Outcome::Ok {
            result: Some(r), ..
        } => {
            count("applied");
            Ok((r, true))
        }
        Outcome::Replay {
            result: Some(r), ..
        } => {
            count("replay");
            Ok((r, false))
        }
        Outcome::Conflict { message, .. } => {
            count("conflict");
            Err(Error::conflict(message))
        }
        Outcome::OutOfStock { lines } => {
            count("out_of_stock");
            Err(Error::OutOfStock {
                lines,
                alternatives: Vec::new(),
                similar: Vec::new(),
            })
        }
        Outcome::Invalid { field, message } => Err(Invalid::new(field, message).into()),
        other => Err(anyhow::anyhow!("unexpected movement outcome {other:?}").into()),
    }
}

/// Whether the outlet's owner (this process or another) has applied the movement and its
/// ledger document is durable: its event record is in Redis and the outbox no longer holds
/// its seq (the writer trims only what is in the ledger). A process that does not own the
/// outlet uses it to let go of its copy of a POS message once the owner's copy is safe.
pub async fn applied_durably(services: &Services, m: &Movement) -> Result<bool, Error> {
    let store = &services.shared.store;
    let keys = store.keys(&m.outlet);
    let Some(seq) = (store.event_seq(&keys, m.event_id.as_str()).await).map_err(Error::store)?
    else {
        return Ok(false);
    };
    let first = store.first_outbox_seq(&keys).await.map_err(Error::store)?;
    Ok(first.is_none_or(|first| seq < first))
}

/// One half of movement `m` for its outlet's actor (the whole of it but for a transfer):
/// `kind` and `key` tell the halves apart, `counterpart` names the other outlet. The units
/// of a transfer's receiving half go into the lots its sending half took them from
/// (`from_lots`, the sending half's lot deltas).
pub(crate) fn half(
    m: &Movement,
    hash: &str,
    kind: LedgerKind,
    key: String,
    counterpart: Option<OutletId>,
    from_lots: Option<&[LotDelta]>,
    by: &By,
) -> ApplyMovement {
    let (lot, lots) = match (from_lots, &m.lot) {
        (Some(deltas), _) => {
            let lots = (deltas.iter())
                .filter(|d| d.d_qty < 0)
                .map(|d| LotIn {
                    lot: d.lot.clone(),
                    made_at: d.made_at,
                    expires_at: d.expires_at,
                    qty: -d.d_qty,
                })
                .collect();
            (None, lots)
        }
        (
            None,
            Some(LotSpec {
                id,
                made_at: Some(made_at),
                expires_at: Some(expires_at),
            }),
        ) => {
            let lot = LotIn {
                lot: id.clone(),
                made_at: *made_at,
                expires_at: *expires_at,
                qty: m.qty.abs(),
            };
            (None, vec![lot])
        }
        (None, Some(spec)) => (Some(spec.id.clone()), Vec::new()),
        (None, None) => (None, Vec::new()),
    };
    ApplyMovement {
        lot,
        lots,
        key,
        hash: hash.to_owned(),
        kind,
        sku: m.sku.clone(),
        qty: m.qty,
        event_id: m.event_id.to_string(),
        event_at_ms: m.at.timestamp_millis(),
        note: m.note.clone(),
        counterpart,
        by: by.clone(),
    }
}

/// What a movement did: its result at the outlet, what the re-routing pass it set off did (a
/// fresh movement that left holds short), and a transfer's receiving half.
pub struct Applied {
    pub result: MovementResult,
    pub relief: Option<Relief>,
    pub to: Option<(OutletId, MovementResult)>,
}

/// Applies a validated movement; a transfer applies its `transfer_out` and then its
/// `transfer_in`, each idempotent, so a retry with the same `event_id` completes a transfer
/// that was cut between its halves.
/// `by` names who sent it, for its ledger documents (see `store::By`).
pub async fn apply(services: &Services, m: &Movement, by: By) -> Result<Applied, Error> {
    let hash = m.body_hash();
    let retain = services.settings.movements.retain_secs;
    services
        .claim_key(ClaimKind::Event, m.event_id.as_str(), &m.outlet, retain)
        .await?;
    let half = |kind: LedgerKind,
                key: String,
                counterpart: Option<OutletId>,
                from_lots: Option<&[LotDelta]>| {
        half(m, &hash, kind, key, counterpart, from_lots, &by)
    };
    let source = services.outlet(&m.outlet)?;
    // Both halves' outlets before either is applied: a transfer to an outlet this process
    // does not own is refused whole, and not forwarded (its owner does not own the source).
    let dest = m
        .to_outlet
        .as_ref()
        .map(|to| services.outlet(to))
        .transpose()
        .map_err(Error::not_forwarded)?;
    let msg = half(
        ledger_kind(m.kind),
        m.event_id.to_string(),
        m.to_outlet.clone(),
        None,
    );
    // The sweep leaves the outlet to this movement's own pass, so the answer lists the moves.
    let in_flight = services.reroute.movement_in_flight(&m.outlet);
    let (result, fresh) = apply_half(services, &source, &m.outlet, msg).await?;
    // A replay answers as the first time did; what it left short the sweep looks after.
    let relief = if result.shortfall.is_some() && fresh {
        Some(relieve(services, &m.outlet).await)
    } else {
        None
    };
    drop(in_flight);
    let to = match &m.to_outlet {
        Some(to) => {
            let key = format!("{TRANSFER_IN_PREFIX}{}", m.event_id);
            let msg = half(
                LedgerKind::TransferIn,
                key,
                Some(m.outlet.clone()),
                Some(&result.lots),
            );
            let dest = dest.as_ref().expect("resolved with the source");
            let (incoming, _) = apply_half(services, dest, to, msg).await?;
            Some((to.clone(), incoming))
        }
        None => None,
    };
    Ok(Applied { result, relief, to })
}
