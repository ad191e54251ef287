//! `whatsapp_messages`: every message the webhook accepted, kept before its 200 and then
//! decided once (`queued` → `held`, `out_of_stock`, `refused`, `unknown_sku`, `invalid`,
//! `ignored`, `failed`). Every write is idempotent: a record is created with `$setOnInsert` by its id,
//! and decided only while it is still `queued`.

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Collection;
use tracing::warn;

use super::message::Message;
use crate::domain::{digest, now_ms};
use crate::ledger::Ledger;

const MESSAGES: &str = "whatsapp_messages";

/// A typed handle on `whatsapp_messages`. Clones share the client's pool.
#[derive(Clone)]
pub struct Messages {
    records: Collection<Document>,
}

/// A record still `queued`, as the sweep reads it.
pub enum Queued {
    Message(Message),
    /// A record the worker cannot read, by its `_id`, and why.
    Unreadable(mongodb::bson::Bson, String),
}

impl Messages {
    pub fn new(ledger: &Ledger) -> Self {
        Self {
            records: ledger.beside(MESSAGES),
        }
    }

    /// Records a message as `queued`, once per message id (a redelivery changes nothing). A
    /// message BSON cannot hold (a quantity past i64) is recorded `invalid`, as JSON text: a
    /// redelivery would not help.
    pub async fn keep(&self, m: &Message) -> anyhow::Result<()> {
        let record = match mongodb::bson::to_bson(m) {
            Ok(message) => {
                doc! {"from": &m.from, "type": &m.kind, "status": "queued", "message": message, "at_ms": now_ms()}
            }
            Err(e) => {
                warn!(message = %m.id, error = %e, "a WhatsApp message that BSON cannot hold");
                let json = serde_json::to_string(m)?;
                doc! {"from": &m.from, "type": &m.kind, "status": "invalid",
                "reason": format!("not storable: {e}"), "body": json, "at_ms": now_ms()}
            }
        };
        self.records
            .update_one(doc! {"_id": &m.id}, doc! {"$setOnInsert": record})
            .upsert(true)
            .await
            .context("keeping a WhatsApp message")?;
        Ok(())
    }

    /// Keeps a signed body that is not JSON, by its digest, for a person to see.
    pub async fn keep_unparsed(&self, body: &[u8], reason: String) -> anyhow::Result<()> {
        let record = doc! {"status": "invalid", "reason": reason,
        "body": String::from_utf8_lossy(body).as_ref(), "at_ms": now_ms()};
        self.records
            .update_one(
                doc! {"_id": format!("body:{}", digest(body))},
                doc! {"$setOnInsert": record},
            )
            .upsert(true)
            .await
            .context("keeping a WhatsApp webhook")?;
        Ok(())
    }

    /// Whether the message is still waiting for its fate.
    pub async fn is_queued(&self, id: &str) -> anyhow::Result<bool> {
        let found = (self.records.find_one(doc! {"_id": id}).await)
            .context("reading a WhatsApp message")?;
        Ok(found.is_some_and(|d| d.get_str("status") == Ok("queued")))
    }

    /// Up to `limit` records still `queued`.
    pub async fn queued(&self, limit: i64) -> anyhow::Result<Vec<Queued>> {
        let records: Vec<Document> = self
            .records
            .find(doc! {"status": "queued"})
            .limit(limit)
            .await
            .context("finding queued WhatsApp messages")?
            .try_collect()
            .await
            .context("reading queued WhatsApp messages")?;
        Ok(records
            .into_iter()
            .map(|d| {
                let message = d
                    .get_document("message")
                    .map_err(anyhow::Error::new)
                    .and_then(|m| Ok(mongodb::bson::from_document::<Message>(m.clone())?));
                match message {
                    Ok(m) => Queued::Message(m),
                    Err(e) => Queued::Unreadable(
                        d.get("_id").cloned().unwrap_or_default(),
                        format!("unreadable record: {e:#}"),
                    ),
                }
            })
            .collect())
    }

    /// Records a queued message's fate (`decided` holds `status` and its details); a
    /// message decided already keeps its first fate.
    pub async fn decide(&self, id: &mongodb::bson::Bson, decided: Document) -> anyhow::Result<()> {
        self.records
            .update_one(doc! {"_id": id, "status": "queued"}, doc! {"$set": decided})
            .await?;
        Ok(())
    }
}
