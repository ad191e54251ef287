//! The chain's outlets, SKUs and opening stock, read from CSV files (see README, "Catalogue").

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::domain::{Invalid, OutletId, Sku};
use crate::settings::CatalogueSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutletKind {
    Outlet,
    Kitchen,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outlet {
    pub id: OutletId,
    pub name: String,
    pub city: String,
    pub kind: OutletKind,
    /// 0: as the CSV has it; each edit through `PUT /v1/outlets/{outlet}` is the next version.
    pub version: u64,
}

/// Longest outlet name or city, in bytes.
pub const PLACE_LEN_MAX: usize = 120;

impl Outlet {
    /// An outlet's fields checked as the CSV's rows and the admin's edits both are: an id
    /// within the catalogue's length, a printable name and city.
    pub fn new(id: &str, name: &str, city: &str, kind: OutletKind) -> Result<Self, Invalid> {
        let id = OutletId::parse_catalogue("id", id)?;
        Ok(Self {
            id,
            name: printable("name", name, PLACE_LEN_MAX)?,
            city: printable("city", city, PLACE_LEN_MAX)?,
            kind,
            version: 0,
        })
    }

    /// The same fields as version `version`.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }
}

/// `value` trimmed, when it is 1 to `max` bytes of printable text.
fn printable(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {max} bytes of printable text"),
        ));
    }
    Ok(value.to_owned())
}

/// Whether a SKU is sold: a retired one takes no new holds or receipts, while what is left of
/// it can still be sold at the counter, counted, written off or moved, so its stock stays
/// explained by the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkuStatus {
    Active,
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkuInfo {
    pub sku: Sku,
    pub name: String,
    pub category: String,
    /// Days from making to expiry; `None` when the SKU keeps (packed goods).
    pub shelf_life_days: Option<u32>,
    pub status: SkuStatus,
    /// 0: as the CSV has it; each edit through `PUT /v1/skus/{sku}` is the next version.
    pub version: u64,
    /// The pack size the name shows, read once (`pack_size`): every `409 out_of_stock`
    /// compares it across the catalogue.
    #[serde(skip)]
    size: Option<String>,
}

/// Longest SKU name, in bytes.
pub const NAME_LEN_MAX: usize = 120;
/// Longest category, in bytes.
pub const CATEGORY_LEN_MAX: usize = 40;
/// Longest shelf life, in days (ten years).
pub const SHELF_LIFE_DAYS_MAX: u32 = 3650;

impl SkuInfo {
    /// A SKU's fields checked as the CSV's rows and the admin's edits both are: a printable
    /// name, a category of lower-case letters, digits and dashes, a shelf life in range.
    pub fn new(
        sku: Sku,
        name: &str,
        category: &str,
        shelf_life_days: Option<u32>,
        status: SkuStatus,
    ) -> Result<Self, Invalid> {
        let name = printable("name", name, NAME_LEN_MAX)?;
        let category_ok = !category.is_empty()
            && category.len() <= CATEGORY_LEN_MAX
            && category
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !category_ok {
            return Err(Invalid::new(
                "category",
                format!("must be 1 to {CATEGORY_LEN_MAX} of a-z, 0-9 and '-'"),
            ));
        }
        if shelf_life_days.is_some_and(|d| !(1..=SHELF_LIFE_DAYS_MAX).contains(&d)) {
            return Err(Invalid::new(
                "shelf_life_days",
                format!("must be 1 to {SHELF_LIFE_DAYS_MAX}, or left out for goods that keep"),
            ));
        }
        Ok(Self {
            sku,
            size: pack_size(&name),
            name,
            category: category.to_owned(),
            shelf_life_days,
            status,
            version: 0,
        })
    }

    /// The pack size the name shows ("Kaju Katli 1 kg" → "1kg"), for offering a similar item
    /// of the same size; `None` when the name shows none.
    pub fn size(&self) -> Option<&str> {
        self.size.as_deref()
    }

    /// The same fields as version `version`.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }
}

/// The pack size a name shows ("Kaju Katli 1 kg" → "1kg", "Soan Papdi 250g" → "250g").
fn pack_size(name: &str) -> Option<String> {
    let words: Vec<&str> = name.split_whitespace().collect();
    let unit = |w: &str| {
        matches!(
            w.to_ascii_lowercase().as_str(),
            "g" | "kg" | "ml" | "l" | "pc" | "pcs"
        )
    };
    for (i, w) in words.iter().enumerate() {
        let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = &w[digits.len()..];
        let number = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if number && !suffix.is_empty() && unit(suffix) {
            return Some(format!("{digits}{}", suffix.to_ascii_lowercase()));
        }
        if number && suffix.is_empty() && words.get(i + 1).is_some_and(|u| unit(u)) {
            return Some(format!("{digits}{}", words[i + 1].to_ascii_lowercase()));
        }
    }
    None
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
    sku_index: HashMap<Sku, usize>,
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
    /// An optional column.
    #[serde(default)]
    shelf_life_days: Option<u32>,
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
            .map(|(i, r)| Outlet::new(&r.id, &r.name, &r.city, r.kind).map_err(at_row(path, i)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let path = &settings.skus_file;
        let skus = read_csv::<SkuRecord>(path)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let sku = Sku::parse("sku", &r.sku).map_err(at_row(path, i))?;
                SkuInfo::new(
                    sku,
                    &r.name,
                    &r.category,
                    r.shelf_life_days,
                    SkuStatus::Active,
                )
                .map_err(at_row(path, i))
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
        let mut sku_index = HashMap::new();
        for (i, s) in skus.iter().enumerate() {
            if sku_index.insert(s.sku.clone(), i).is_some() {
                bail!("sku {} is listed twice", s.sku);
            }
        }
        if outlets.is_empty() {
            bail!("the catalogue has no outlets");
        }
        Ok(Self {
            outlets,
            skus,
            sku_index,
            outlet_index,
        })
    }

    pub fn outlet(&self, id: &OutletId) -> Option<&Outlet> {
        self.outlet_index.get(id).map(|&i| &self.outlets[i])
    }

    pub fn has_sku(&self, sku: &Sku) -> bool {
        self.sku_index.contains_key(sku)
    }

    pub fn sku(&self, sku: &Sku) -> Option<&SkuInfo> {
        self.sku_index.get(sku).map(|&i| &self.skus[i])
    }

    /// This catalogue with `info` added, or in place of the SKU's entry.
    pub fn with_sku(mut self, info: SkuInfo) -> Self {
        match self.sku_index.get(&info.sku) {
            Some(&i) => self.skus[i] = info,
            None => {
                self.sku_index.insert(info.sku.clone(), self.skus.len());
                self.skus.push(info);
            }
        }
        self
    }

    /// This catalogue with `outlet` added, or in place of the outlet's entry.
    pub fn with_outlet(mut self, outlet: Outlet) -> Self {
        match self.outlet_index.get(&outlet.id) {
            Some(&i) => self.outlets[i] = outlet,
            None => {
                self.outlet_index
                    .insert(outlet.id.clone(), self.outlets.len());
                self.outlets.push(outlet);
            }
        }
        self
    }

    /// Parses a SKU that must be in the catalogue and active: what a new hold or a receipt
    /// names. A retired SKU is refused with the reason.
    pub fn active_sku(&self, field: &str, value: &str) -> Result<Sku, Invalid> {
        let sku = self.known_sku(field, value)?;
        if self
            .sku(&sku)
            .is_some_and(|s| s.status == SkuStatus::Retired)
        {
            return Err(Invalid::new(
                field,
                format!(
                    "sku '{value}' is retired: it takes no new holds or receipts \
                     (what is left of it can still be sold at the counter, counted or written off)"
                ),
            ));
        }
        Ok(sku)
    }

    /// The active SKUs a customer may take instead of `sku`: the same category and, when the
    /// name shows a pack size, the same size; in catalogue order.
    pub fn similar(&self, sku: &Sku) -> Vec<&SkuInfo> {
        let Some(this) = self.sku(sku) else {
            return Vec::new();
        };
        let size = this.size();
        self.skus
            .iter()
            .filter(|s| s.sku != this.sku && s.status == SkuStatus::Active)
            .filter(|s| s.category == this.category)
            .filter(|s| size.is_none() || s.size() == size)
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sku: &str, name: &str, category: &str) -> SkuInfo {
        SkuInfo::new(
            Sku::parse("sku", sku).unwrap(),
            name,
            category,
            None,
            SkuStatus::Active,
        )
        .unwrap()
    }

    #[test]
    fn sizes_are_read_off_names() {
        assert_eq!(info("a", "Kaju Katli 1 kg", "sweets").size(), Some("1kg"));
        assert_eq!(info("a", "Soan Papdi 250g", "sweets").size(), Some("250g"));
        assert_eq!(
            info("a", "Rose Sherbet 0.5 L", "drinks").size(),
            Some("0.5l")
        );
        assert_eq!(info("a", "Samosa", "snacks").size(), None);
        assert_eq!(info("a", "Navratna Mix", "snacks").size(), None);
    }

    #[test]
    fn similar_items_share_category_and_size_and_are_active() {
        let outlet = Outlet::new("o", "O", "C", OutletKind::Outlet).unwrap();
        let c = Catalogue::new(
            vec![outlet],
            vec![
                info("katli-1kg", "Kaju Katli 1 kg", "sweets"),
                info("laddu-1kg", "Besan Laddu 1 kg", "sweets"),
                info("laddu-250g", "Besan Laddu 250 g", "sweets"),
                info("mix-1kg", "Navratna Mix 1 kg", "namkeen"),
                info("barfi-1kg", "Barfi 1 kg", "sweets"),
            ],
        )
        .unwrap();
        let mut barfi = c
            .sku(&Sku::parse("s", "barfi-1kg").unwrap())
            .unwrap()
            .clone();
        barfi.status = SkuStatus::Retired;
        let c = c.with_sku(barfi);
        let similar: Vec<&str> = c
            .similar(&Sku::parse("s", "katli-1kg").unwrap())
            .iter()
            .map(|s| s.sku.as_str())
            .collect();
        assert_eq!(similar, ["laddu-1kg"]);
        let err = c.active_sku("sku", "barfi-1kg").unwrap_err();
        assert!(err.message.contains("retired"), "{}", err.message);
        assert!(c.active_sku("sku", "laddu-1kg").is_ok());
    }

    #[test]
    fn outlet_fields_are_checked() {
        let fields = |r: Result<Outlet, Invalid>| r.unwrap_err().field;
        let kind = OutletKind::Outlet;
        assert_eq!(fields(Outlet::new("", "A", "B", kind)), "id");
        assert_eq!(fields(Outlet::new(&"x".repeat(42), "A", "B", kind)), "id");
        assert_eq!(fields(Outlet::new("a", " ", "B", kind)), "name");
        assert_eq!(fields(Outlet::new("a", "A", "B\u{7}", kind)), "city");
        let ok = Outlet::new("jabalpur-napier-town", " Napier Town ", "Jabalpur", kind).unwrap();
        assert_eq!((ok.name.as_str(), ok.version), ("Napier Town", 0));
    }

    #[test]
    fn sku_fields_are_checked() {
        let sku = || Sku::parse("sku", "x").unwrap();
        let bad = [
            SkuInfo::new(sku(), "", "sweets", None, SkuStatus::Active),
            SkuInfo::new(sku(), "A\nB", "sweets", None, SkuStatus::Active),
            SkuInfo::new(sku(), "A", "Sweets", None, SkuStatus::Active),
            SkuInfo::new(sku(), "A", "sweets", Some(0), SkuStatus::Active),
            SkuInfo::new(
                sku(),
                "A",
                "sweets",
                Some(SHELF_LIFE_DAYS_MAX + 1),
                SkuStatus::Active,
            ),
        ];
        let fields: Vec<String> = bad.into_iter().map(|r| r.unwrap_err().field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "name",
                "category",
                "shelf_life_days",
                "shelf_life_days"
            ]
        );
    }
}
