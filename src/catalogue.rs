//! The chain's outlets, SKUs and opening stock, read from CSV files (see README, "Catalogue").

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::domain::{Invalid, OutletId, Sku};
use crate::settings::CatalogueSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutletKind {
    Outlet,
    Kitchen,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outlet {
    pub id: OutletId,
    pub name: String,
    pub city: String,
    pub kind: OutletKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkuInfo {
    pub sku: Sku,
    pub name: String,
    pub category: String,
}

/// One opening-stock row: `qty` units of `sku` on hand at `outlet`.
#[derive(Debug, Clone)]
pub struct StockRow {
    pub outlet: OutletId,
    pub sku: Sku,
    pub qty: i64,
}

#[derive(Debug, Clone)]
pub struct Catalogue {
    pub outlets: Vec<Outlet>,
    pub skus: Vec<SkuInfo>,
    sku_set: HashSet<Sku>,
    outlet_index: HashMap<OutletId, usize>,
}

#[derive(Deserialize)]
struct OutletRecord {
    id: String,
    name: String,
    city: String,
    kind: OutletKind,
}

#[derive(Deserialize)]
struct SkuRecord {
    sku: String,
    name: String,
    category: String,
}

#[derive(Deserialize)]
struct StockRecord {
    outlet: String,
    sku: String,
    qty: i64,
}

fn read_csv<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{} row {}", path.display(), i + 2)))
        .collect()
}

fn at_row(path: &Path, row: usize) -> impl Fn(Invalid) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{} row {}: {e}", path.display(), row + 2)
}

impl Catalogue {
    pub fn load(settings: &CatalogueSettings) -> anyhow::Result<Self> {
        let path = &settings.outlets_file;
        let outlets = read_csv::<OutletRecord>(path)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Outlet {
                    id: OutletId::parse_catalogue("id", &r.id).map_err(at_row(path, i))?,
                    name: r.name,
                    city: r.city,
                    kind: r.kind,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let path = &settings.skus_file;
        let skus = read_csv::<SkuRecord>(path)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(SkuInfo {
                    sku: Sku::parse("sku", &r.sku).map_err(at_row(path, i))?,
                    name: r.name,
                    category: r.category,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::new(outlets, skus)
    }

    pub fn new(outlets: Vec<Outlet>, skus: Vec<SkuInfo>) -> anyhow::Result<Self> {
        let mut outlet_index = HashMap::new();
        for (i, o) in outlets.iter().enumerate() {
            if outlet_index.insert(o.id.clone(), i).is_some() {
                bail!("outlet {} is listed twice", o.id);
            }
        }
        let mut sku_set = HashSet::new();
        for s in &skus {
            if !sku_set.insert(s.sku.clone()) {
                bail!("sku {} is listed twice", s.sku);
            }
        }
        if outlets.is_empty() {
            bail!("the catalogue has no outlets");
        }
        Ok(Self {
            outlets,
            skus,
            sku_set,
            outlet_index,
        })
    }

    pub fn outlet(&self, id: &OutletId) -> Option<&Outlet> {
        self.outlet_index.get(id).map(|&i| &self.outlets[i])
    }

    pub fn has_sku(&self, sku: &Sku) -> bool {
        self.sku_set.contains(sku)
    }

    /// Parses an outlet id that must name a catalogue outlet.
    pub fn known_outlet(&self, field: &str, value: &str) -> Result<OutletId, Invalid> {
        let id = OutletId::parse(field, value)?;
        if self.outlet(&id).is_none() {
            return Err(Invalid::new(field, format!("unknown outlet '{value}'")));
        }
        Ok(id)
    }

    /// Parses a SKU that must be in the catalogue.
    pub fn known_sku(&self, field: &str, value: &str) -> Result<Sku, Invalid> {
        let sku = Sku::parse(field, value)?;
        if !self.has_sku(&sku) {
            return Err(Invalid::new(field, format!("unknown sku '{value}'")));
        }
        Ok(sku)
    }

    /// Reads the opening stock file, checking every outlet and SKU against the catalogue.
    pub fn load_stock(&self, path: &Path) -> anyhow::Result<Vec<StockRow>> {
        read_csv::<StockRecord>(path)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let err = at_row(path, i);
                if r.qty < 0 {
                    return Err(err(Invalid::new("qty", "must not be negative")));
                }
                Ok(StockRow {
                    outlet: self.known_outlet("outlet", &r.outlet).map_err(&err)?,
                    sku: self.known_sku("sku", &r.sku).map_err(&err)?,
                    qty: r.qty,
                })
            })
            .collect()
    }
}
