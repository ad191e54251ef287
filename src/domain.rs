//! Domain values. Each is parsed once at the edge (HTTP, MQTT, catalogue files) so that an
//! invalid id, SKU or quantity cannot exist past it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused at the edge. `field` names what the client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Ids are `[A-Za-z0-9_-]{1,64}` (API.md, Conventions).
const ID_LEN_MAX: usize = 64;

fn check_id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > ID_LEN_MAX {
        return Err(Invalid::new(field, "must be 1 to 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Invalid::new(field, "may hold only A-Z a-z 0-9 _ -"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(field: &str, value: &str) -> Result<Self, Invalid> {
                check_id(field, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// An outlet (shop or kitchen). Outlet ids are at most
    /// [`OutletId::LEN_MAX`] characters so that a reservation id can carry one.
    OutletId
);
id_type!(
    /// A stock-keeping unit, e.g. `kaju-katli-1kg`.
    Sku
);
id_type!(
    /// A POS or manager movement's client-chosen id; the idempotency key of a movement.
    EventId
);
id_type!(
    /// The `Idempotency-Key` header of a reservation request.
    IdempotencyKey
);

impl OutletId {
    /// 64 minus the separator and the random part of a reservation id.
    pub const LEN_MAX: usize = ID_LEN_MAX - 1 - ReservationId::RANDOM_LEN;

    /// Parses an outlet id for the catalogue, where the tighter length applies.
    pub fn parse_catalogue(field: &str, value: &str) -> Result<Self, Invalid> {
        let id = Self::parse(field, value)?;
        if value.starts_with('_') {
            // `_unknown` and the like name no outlet in MQTT's dead letters.
            return Err(Invalid::new(
                field,
                "outlet ids start with a letter or a digit",
            ));
        }
        if value.len() > Self::LEN_MAX {
            return Err(Invalid::new(
                field,
                format!("outlet ids are at most {} characters", Self::LEN_MAX),
            ));
        }
        Ok(id)
    }
}

/// A reservation id: `{outlet}-{22 random base62 characters}`. The outlet is part of the id so
/// that any instance can route a reservation request to its outlet without a lookup table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(String);

impl ReservationId {
    pub const RANDOM_LEN: usize = 22;

    pub fn new(outlet: &OutletId) -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::thread_rng();
        let random: String = (0..Self::RANDOM_LEN)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        Self(format!("{outlet}-{random}"))
    }

    pub fn parse(field: &str, value: &str) -> Result<Self, Invalid> {
        check_id(field, value)?;
        let id = Self(value.to_owned());
        if id.outlet_part().is_none() {
            return Err(Invalid::new(field, "is not a reservation id"));
        }
        Ok(id)
    }

    /// The outlet part, if the id has the shape of a reservation id.
    fn outlet_part(&self) -> Option<&str> {
        let cut = self.0.len().checked_sub(Self::RANDOM_LEN + 1)?;
        let (outlet, rest) = self.0.split_at(cut);
        (!outlet.is_empty() && rest.starts_with('-')).then_some(outlet)
    }

    /// The outlet that holds this reservation.
    pub fn outlet(&self) -> OutletId {
        // parse() and new() guarantee the shape.
        OutletId(self.outlet_part().expect("reservation id shape").to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive quantity of units, bounded by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Qty(i64);

impl Qty {
    pub fn parse(field: &str, value: i64, max: i64) -> Result<Self, Invalid> {
        if value < 1 {
            return Err(Invalid::new(field, "must be a positive integer"));
        }
        if value > max {
            return Err(Invalid::new(field, format!("must be at most {max}")));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: Sku,
    pub qty: Qty,
}

/// Sales channel of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Web,
    Whatsapp,
    Counter,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Whatsapp => "whatsapp",
            Self::Counter => "counter",
        }
    }

    pub fn parse(field: &str, value: &str) -> Result<Self, Invalid> {
        match value {
            "web" => Ok(Self::Web),
            "whatsapp" => Ok(Self::Whatsapp),
            "counter" => Ok(Self::Counter),
            _ => Err(Invalid::new(field, "must be web, whatsapp or counter")),
        }
    }
}

/// The movement kinds a client may send to `/v1/movements`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    SaleCounter,
    Receipt,
    Wastage,
    Return,
    Adjustment,
    Count,
    Transfer,
}

impl MovementKind {
    pub const ALL: [MovementKind; 7] = [
        Self::SaleCounter,
        Self::Receipt,
        Self::Wastage,
        Self::Return,
        Self::Adjustment,
        Self::Count,
        Self::Transfer,
    ];

    pub fn parse(field: &str, value: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or_else(|| {
                Invalid::new(
                    field,
                    "must be sale_counter, receipt, wastage, return, adjustment, count or transfer",
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SaleCounter => "sale_counter",
            Self::Receipt => "receipt",
            Self::Wastage => "wastage",
            Self::Return => "return",
            Self::Adjustment => "adjustment",
            Self::Count => "count",
            Self::Transfer => "transfer",
        }
    }
}

/// The event key of a transfer's receiving half is this prefix and the event id.
pub const TRANSFER_IN_PREFIX: &str = "transfer_in:";

/// What a single outlet's script applies for a movement: a transfer is split into its two
/// halves, each applied by its own outlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    ReservationHeld,
    ReservationReleased,
    SaleWeb,
    SaleCounter,
    Receipt,
    Wastage,
    Return,
    Adjustment,
    Count,
    TransferOut,
    TransferIn,
    /// What was left of a lot at its expiry, written off (issued by the outlet itself).
    Expiry,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservationHeld => "reservation_held",
            Self::ReservationReleased => "reservation_released",
            Self::SaleWeb => "sale_web",
            Self::SaleCounter => "sale_counter",
            Self::Receipt => "receipt",
            Self::Wastage => "wastage",
            Self::Return => "return",
            Self::Adjustment => "adjustment",
            Self::Count => "count",
            Self::TransferOut => "transfer_out",
            Self::TransferIn => "transfer_in",
            Self::Expiry => "expiry",
        }
    }
}

/// A validated stock movement for one outlet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Movement {
    pub event_id: EventId,
    pub outlet: OutletId,
    pub sku: Sku,
    pub kind: MovementKind,
    /// Positive for every kind but `adjustment` (signed, non-zero) and `count` (may be 0).
    pub qty: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub note: Option<String>,
    pub to_outlet: Option<OutletId>,
    /// The lot fields as the client sent them. The body hash covers these, not the defaults
    /// the service fills in (`lot`), so that a retry is told apart from another movement by
    /// what was sent, whatever the catalogue's shelf life says by then.
    #[serde(skip_serializing_if = "SentLot::is_empty")]
    pub sent_lot: SentLot,
    /// The lot units go out of, or come into (with its times); none: the outlet picks
    /// (earliest expiry first) or the units are loose.
    #[serde(skip)]
    pub lot: Option<LotSpec>,
}

/// A movement's `lot`, `made_at` and `expires_at` as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SentLot {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub made_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl SentLot {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A movement's lot: `id` alone for units going out; with its times for units coming in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LotSpec {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub made_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Movement {
    /// A digest of everything that defines the movement, so that a replay with the same
    /// `event_id` but another body is told apart from a true replay.
    pub fn body_hash(&self) -> String {
        digest(&serde_json::to_vec(self).expect("movement serializes"))
    }
}

/// Hex SHA-256 (first 16 bytes) of a request's canonical form.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// Live numbers of one SKU at one outlet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub on_hand: i64,
    pub reserved: i64,
    /// The outlet seq of the last change that these numbers reflect.
    pub seq: u64,
}

impl Counters {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// One lot of a SKU at an outlet, as Redis keeps it (`lots` of keys.rs): units made together
/// that expire together. `qty` is on hand, `held` of them by live holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub lot: String,
    pub made_at: i64,
    pub expires_at: i64,
    pub qty: i64,
    pub held: i64,
}

impl Lot {
    /// Sorts lots as Redis keeps them: earliest expiry first, then by lot id (bytewise).
    pub fn sort(lots: &mut [Lot]) {
        lots.sort_by(|a, b| (a.expires_at, &a.lot).cmp(&(b.expires_at, &b.lot)));
    }
}

/// A lot's change in a ledger line (and in a movement's answer): units in or out (`d_qty`),
/// held or let go (`d_held`). It names the lot's times so that the ledger alone explains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotDelta {
    pub lot: String,
    pub made_at: i64,
    pub expires_at: i64,
    #[serde(default)]
    pub d_qty: i64,
    #[serde(default)]
    pub d_held: i64,
}

/// Units of one lot a live hold holds (`ResRecord::lots`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLot {
    pub sku: Sku,
    pub lot: String,
    pub qty: i64,
}

/// A lot id as a client names it: `[A-Za-z0-9_-]{1,64}`, like every id.
pub fn parse_lot_id(field: &str, value: &str) -> Result<String, Invalid> {
    check_id(field, value)?;
    Ok(value.to_owned())
}

/// Status of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Held,
    Confirmed,
    Cancelled,
    Expired,
    /// Moved to another outlet after a counter sale left this one short (`rerouted_to`).
    Rerouted,
}

/// Milliseconds since the Unix epoch, as every script and ledger document keeps time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 UTC with milliseconds, as API.md wants times.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_outside_the_alphabet_or_length_are_refused() {
        assert!(Sku::parse("sku", "kaju-katli_1kg").is_ok());
        assert_eq!(Sku::parse("sku", "").unwrap_err().field, "sku");
        assert!(Sku::parse("sku", "a b").is_err());
        assert!(Sku::parse("sku", &"x".repeat(65)).is_err());
        assert!(Sku::parse("sku", &"x".repeat(64)).is_ok());
    }

    #[test]
    fn reservation_id_carries_its_outlet() {
        let outlet = OutletId::parse("o", "indore-vijay-nagar").unwrap();
        let id = ReservationId::new(&outlet);
        assert!(id.as_str().len() <= 64);
        let parsed = ReservationId::parse("id", id.as_str()).unwrap();
        assert_eq!(parsed.outlet(), outlet);
        assert!(ReservationId::parse("id", "short").is_err());
    }

    #[test]
    fn quantities_must_be_positive_and_bounded() {
        assert!(Qty::parse("qty", 0, 10).is_err());
        assert!(Qty::parse("qty", -1, 10).is_err());
        assert!(Qty::parse("qty", 11, 10).is_err());
        assert_eq!(Qty::parse("qty", 10, 10).unwrap().get(), 10);
    }
}
