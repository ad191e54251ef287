//! Delivery zones: which outlets deliver to a PIN code, at what cost.
//!
//! The table starts from `catalogue/zones.csv` (`pin,outlet,cost`) and is edited through
//! `PUT /v1/zones/{pin}`. Edits are versioned in MongoDB: every change of a PIN inserts
//! `zone_versions` `{_id: "{pin}:{version}", pin, version, outlets, at_ms, by}` (never
//! updated, so the history stays) and then replaces the PIN's current row in `zones`. At
//! start the service reads the CSV and lays the current MongoDB rows over it, so an edit
//! outlives restarts and a later CSV deploy does not silently undo it. Every process reads the
//! rows changed since its last look each `catalogue.refresh_ms` (`refresh`, the same reading
//! as the catalogue's edits: live_catalogue.rs), so an edit made through one process routes
//! through all of them within that.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

use anyhow::Context;
use mongodb::bson::{doc, Document};
use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, OutletKind};
use crate::domain::{Invalid, OutletId};
use crate::ledger::Ledger;
use crate::live_catalogue::{EditError, Edits, Versioned};

/// Highest delivery cost accepted, in rupees.
pub const COST_MAX: i64 = 100_000;

/// An Indian PIN code: six digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pin(String);

impl Pin {
    pub fn parse(field: &str, value: &str) -> Result<Self, Invalid> {
        let ok = value.len() == 6
            && value.bytes().all(|b| b.is_ascii_digit())
            && !value.starts_with('0');
        if !ok {
            return Err(Invalid::new(
                field,
                "must be a 6-digit PIN code not starting with 0",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One outlet delivering to a PIN, and what delivery from it costs (whole rupees).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneOutlet {
    pub outlet: OutletId,
    pub cost: i64,
}

/// A PIN's outlets, cheapest first, and the version of that list (0: from the CSV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zone {
    pub pin: Pin,
    pub version: u64,
    pub outlets: Vec<ZoneOutlet>,
}

pub struct Zones {
    table: RwLock<BTreeMap<Pin, Zone>>,
    /// Every edit ever made (`zone_versions`) and the edit each PIN serves now (`zones`).
    edits: Edits<Zone>,
}

#[derive(Deserialize)]
struct ZoneRecord {
    pin: String,
    outlet: String,
    cost: i64,
}

/// Sorts cheapest first (ties by outlet id) and refuses duplicates and bad costs.
fn normalize(
    catalogue: &Catalogue,
    mut outlets: Vec<ZoneOutlet>,
) -> Result<Vec<ZoneOutlet>, Invalid> {
    for (i, o) in outlets.iter().enumerate() {
        let field = format!("outlets[{i}].outlet");
        catalogue.known_outlet(&field, o.outlet.as_str())?;
        if catalogue
            .outlet(&o.outlet)
            .is_some_and(|x| x.kind != OutletKind::Outlet)
        {
            return Err(Invalid::new(
                field,
                "a kitchen does not deliver to customers",
            ));
        }
        if !(0..=COST_MAX).contains(&o.cost) {
            return Err(Invalid::new(
                format!("outlets[{i}].cost"),
                format!("must be 0 to {COST_MAX}"),
            ));
        }
    }
    outlets.sort_by(|a, b| (a.cost, &a.outlet).cmp(&(b.cost, &b.outlet)));
    if outlets.windows(2).any(|w| w[0].outlet == w[1].outlet) {
        return Err(Invalid::new("outlets", "names an outlet twice"));
    }
    Ok(outlets)
}

impl Zones {
    /// The CSV table with the current MongoDB rows laid over it.
    pub async fn load(path: &Path, catalogue: &Catalogue, ledger: &Ledger) -> anyhow::Result<Self> {
        let mut rows: BTreeMap<Pin, Vec<ZoneOutlet>> = BTreeMap::new();
        let mut reader =
            csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, r) in reader.deserialize::<ZoneRecord>().enumerate() {
            let at = || format!("{} row {}", path.display(), i + 2);
            let r = r.with_context(at)?;
            let pin = Pin::parse("pin", &r.pin).with_context(at)?;
            let outlet = catalogue
                .known_outlet("outlet", &r.outlet)
                .with_context(at)?;
            rows.entry(pin).or_default().push(ZoneOutlet {
                outlet,
                cost: r.cost,
            });
        }
        let mut table = BTreeMap::new();
        for (pin, outlets) in rows {
            let outlets = normalize(catalogue, outlets)
                .with_context(|| format!("{} PIN {}", path.display(), pin.as_str()))?;
            table.insert(
                pin.clone(),
                Zone {
                    pin,
                    version: 0,
                    outlets,
                },
            );
        }
        let zones = Self {
            table: RwLock::new(table),
            edits: Edits::new(ledger),
        };
        zones.refresh(catalogue).await?;
        Ok(zones)
    }

    /// Reads the zone rows changed since the last read (all of them the first time) and
    /// serves each that is newer than what the table has. An edit that does not fit the
    /// catalogue (an outlet this process does not know) is left out loudly: the PIN keeps
    /// what it had, and the row is read again at the next full read. How many were new.
    pub async fn refresh(&self, catalogue: &Catalogue) -> anyhow::Result<usize> {
        let changed = self.edits.changed().await.context("reading zone edits")?;
        let mut table = self.table.write().expect("zones lock");
        let mut fresh = 0;
        for mut zone in changed {
            if table
                .get(&zone.pin)
                .is_some_and(|z| z.version >= zone.version)
            {
                continue;
            }
            match normalize(catalogue, std::mem::take(&mut zone.outlets)) {
                Ok(outlets) => {
                    zone.outlets = outlets;
                    table.insert(zone.pin.clone(), zone);
                    fresh += 1;
                }
                Err(e) => {
                    tracing::error!(pin = zone.pin.as_str(), version = zone.version, error = %e, "a zone edit in MongoDB does not fit the catalogue; ignored")
                }
            }
        }
        Ok(fresh)
    }

    /// The outlets delivering to `pin`, cheapest first (empty when none).
    pub fn serving(&self, pin: &Pin) -> Vec<ZoneOutlet> {
        let table = self.table.read().expect("zones lock");
        table
            .get(pin)
            .map(|z| z.outlets.clone())
            .unwrap_or_default()
    }

    pub fn get(&self, pin: &Pin) -> Option<Zone> {
        self.table.read().expect("zones lock").get(pin).cloned()
    }

    pub fn all(&self) -> Vec<Zone> {
        self.table
            .read()
            .expect("zones lock")
            .values()
            .cloned()
            .collect()
    }

    /// Sets the outlets of `pin`. The same list again changes nothing (same version);
    /// a different one becomes the next version, written to MongoDB before it is served.
    pub async fn set(
        &self,
        catalogue: &Catalogue,
        pin: Pin,
        outlets: Vec<ZoneOutlet>,
        by: &str,
    ) -> Result<Zone, EditError> {
        let outlets = normalize(catalogue, outlets)?;
        // What the other processes edited last, so that "the same list" and the next version
        // are judged against the newest row.
        self.refresh(catalogue).await?;
        let current = self.get(&pin);
        if let Some(z) = current.as_ref().filter(|z| z.outlets == outlets) {
            return Ok(z.clone());
        }
        let zone = Zone {
            version: current.map_or(0, |z| z.version) + 1,
            pin,
            outlets,
        };
        let zone = self.edits.write(zone, by).await?;
        let mut table = self.table.write().expect("zones lock");
        if table
            .get(&zone.pin)
            .is_none_or(|z| z.version < zone.version)
        {
            table.insert(zone.pin.clone(), zone.clone());
        }
        Ok(zone)
    }
}

impl Versioned for Zone {
    const CURRENT: &'static str = "zones";
    const VERSIONS: &'static str = "zone_versions";
    const KEY: &'static str = "pin";

    fn key(&self) -> &str {
        self.pin.as_str()
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    fn same_fields(&self, other: &Self) -> bool {
        self.outlets == other.outlets
    }

    fn to_doc(&self) -> Document {
        zone_doc(self)
    }

    /// The outlets are checked against the catalogue by the reader (`normalize`).
    fn from_doc(d: &Document) -> anyhow::Result<Self> {
        zone_from_doc(d)
    }
}

fn zone_doc(z: &Zone) -> Document {
    let outlets: Vec<Document> = z
        .outlets
        .iter()
        .map(|o| doc! {"outlet": o.outlet.as_str(), "cost": o.cost})
        .collect();
    doc! {"pin": z.pin.as_str(), "version": z.version as i64, "outlets": outlets}
}

fn zone_from_doc(d: &Document) -> anyhow::Result<Zone> {
    let pin = Pin::parse("pin", d.get_str("pin")?)?;
    let outlets = d
        .get_array("outlets")?
        .iter()
        .map(|o| {
            let o = o.as_document().context("zone outlet")?;
            Ok(ZoneOutlet {
                outlet: OutletId::parse("outlet", o.get_str("outlet")?)?,
                cost: o.get_i64("cost")?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Zone {
        pin,
        version: u64::try_from(d.get_i64("version")?)?,
        outlets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_six_digits_not_starting_with_zero() {
        assert!(Pin::parse("pin", "452010").is_ok());
        for bad in ["052010", "45201", "4520100", "45201a", ""] {
            assert!(Pin::parse("pin", bad).is_err(), "{bad}");
        }
    }
}
