//! Every MQTT topic of shelfsync is spelled here and nowhere else (API.md, MQTT).

use crate::domain::{OutletId, Sku};

#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Retained absolute stock of one SKU at one outlet.
    pub fn stock(&self, outlet: &OutletId, sku: &Sku) -> String {
        format!("{}stock/{outlet}/{sku}", self.prefix)
    }

    /// What shelfsync subscribes to for POS movements.
    pub fn pos_subscription(&self) -> String {
        format!("{}pos/+/movements", self.prefix)
    }

    /// The outlet segment of a POS topic, if `topic` is one.
    pub fn pos_outlet<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix("pos/")?;
        let outlet = rest.strip_suffix("/movements")?;
        (!outlet.is_empty() && !outlet.contains('/')).then_some(outlet)
    }

    /// Confirmed orders to pick at an outlet.
    pub fn orders(&self, outlet: &OutletId) -> String {
        format!("{}orders/{outlet}", self.prefix)
    }

    /// Sell-out and low-stock alerts of an outlet as they are raised and cleared.
    pub fn alerts(&self, outlet: &OutletId) -> String {
        format!("{}alerts/{outlet}", self.prefix)
    }

    /// `online` / `offline` (retained; the last will says `offline`).
    pub fn status(&self) -> String {
        format!("{}shelfsync/status", self.prefix)
    }

    /// Where an outlet's POS publishes its movements.
    pub fn pos(&self, outlet: &str) -> String {
        format!("{}pos/{outlet}/movements", self.prefix)
    }

    /// Every SKU's retained stock at one outlet (what an outlet's POS subscribes to).
    pub fn stock_of_outlet(&self, outlet: &str) -> String {
        format!("{}stock/{outlet}/+", self.prefix)
    }

    /// The SKU a topic names, if it is one of `outlet`'s stock topics.
    pub fn stock_sku<'a>(&self, outlet: &str, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix("stock/")?;
        let sku = rest.strip_prefix(outlet)?.strip_prefix('/')?;
        (!sku.is_empty() && !sku.contains('/')).then_some(sku)
    }

    /// What became of each POS message with an `event_id`, once durable: `applied` or
    /// `rejected` (the outlet agent keeps a sale until it reads it here).
    pub fn acks(&self, outlet: &str) -> String {
        format!("{}acks/{outlet}", self.prefix)
    }

    /// POS messages that could not be applied. `outlet` is the topic's segment as sent.
    pub fn dlq(&self, outlet: &str) -> String {
        format!("{}dlq/{outlet}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pos_topics_parse_only_with_the_prefix_and_one_outlet_level() {
        let t = Topics::new("t1/");
        assert_eq!(
            t.pos_outlet("t1/pos/bhopal-mp-nagar/movements"),
            Some("bhopal-mp-nagar")
        );
        assert_eq!(t.pos_outlet("pos/bhopal-mp-nagar/movements"), None);
        assert_eq!(t.pos_outlet("t1/pos/a/b/movements"), None);
        assert_eq!(t.pos_outlet("t1/pos//movements"), None);
        assert_eq!(t.pos_subscription(), "t1/pos/+/movements");
        let o = OutletId::parse("o", "x").unwrap();
        let s = Sku::parse("s", "y").unwrap();
        assert_eq!(t.stock(&o, &s), "t1/stock/x/y");
        assert_eq!(t.pos_outlet(&t.pos("x")), Some("x"));
        assert_eq!(t.stock_of_outlet("x"), "t1/stock/x/+");
        assert_eq!(t.stock_sku("x", &t.stock(&o, &s)), Some("y"));
        assert_eq!(t.stock_sku("x", "t1/stock/xx/y"), None);
        assert_eq!(t.stock_sku("x", "t1/stock/x/y/z"), None);
    }
}
