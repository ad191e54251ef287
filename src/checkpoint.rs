//! Projection checkpoints: an outlet's ledger projection (counters, live holds, and the
//! replay records still inside their retention) at one seq, kept in MongoDB so that a
//! rebuild reads the latest checkpoint and folds only the ledger after it.
//!
//! A checkpoint is the projection's JSON, split into parts of at most `PART_BYTES` (a
//! MongoDB document holds 16 MiB), in `checkpoint_parts`, and one head per outlet in
//! `checkpoints` naming the seq, the number of parts and their digest. Parts are written
//! first and the head last, so a checkpoint cut short is invisible; the parts of the
//! previous checkpoint are kept until the next one, so a reader that read the old head
//! still finds its parts. A checkpoint is derived from the ledger alone, never from Redis.

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Document};
use mongodb::options::{Acknowledgment, CollectionOptions, WriteConcern};
use mongodb::Collection;

use crate::domain::{digest, now_ms, OutletId};
use crate::ledger::{Ledger, Projection};

const HEADS: &str = "checkpoints";
const PARTS: &str = "checkpoint_parts";
const PART_BYTES: usize = 4 << 20;

/// The latest checkpoint of an outlet, as its head describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub parts: u32,
    pub bytes: u64,
    pub digest: String,
    pub at_ms: i64,
}

impl Head {
    fn from_doc(d: &Document) -> anyhow::Result<Self> {
        Ok(Self {
            seq: u64::try_from(d.get_i64("seq")?)?,
            parts: u32::try_from(d.get_i64("parts")?)?,
            bytes: u64::try_from(d.get_i64("bytes")?)?,
            digest: d.get_str("digest")?.to_owned(),
            at_ms: d.get_i64("at_ms")?,
        })
    }
}

#[derive(Clone)]
pub struct Checkpoints {
    heads: Collection<Document>,
    parts: Collection<Document>,
}

fn part_id(outlet: &OutletId, seq: u64, part: u32) -> String {
    format!("{outlet}:{seq}:{part}")
}

impl Checkpoints {
    pub fn new(ledger: &Ledger) -> Self {
        let durable = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build();
        let options = || {
            CollectionOptions::builder()
                .write_concern(durable.clone())
                .build()
        };
        Self {
            heads: ledger.db.collection_with_options(HEADS, options()),
            parts: ledger.db.collection_with_options(PARTS, options()),
        }
    }

    pub async fn head(&self, outlet: &OutletId) -> anyhow::Result<Option<Head>> {
        let found = self
            .heads
            .find_one(doc! {"_id": outlet.as_str()})
            .await
            .with_context(|| format!("reading the checkpoint head of {outlet}"))?;
        found.as_ref().map(Head::from_doc).transpose()
    }

    /// Writes `p` as the outlet's latest checkpoint, unless one at the same or a later seq
    /// is already there. Every write is a replace by `_id`, so a retry is harmless.
    pub async fn save(&self, outlet: &OutletId, p: &Projection) -> anyhow::Result<Option<Head>> {
        let previous = self.head(outlet).await?;
        if previous.as_ref().is_some_and(|h| h.seq >= p.seq) {
            return Ok(None);
        }
        let json = serde_json::to_vec(p).context("encoding a checkpoint")?;
        let chunks: Vec<&[u8]> = json.chunks(PART_BYTES).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let id = part_id(outlet, p.seq, i as u32);
            let part = doc! {
                "_id": &id,
                "outlet": outlet.as_str(),
                "seq": p.seq as i64,
                "part": i as i64,
                "data": Binary { subtype: BinarySubtype::Generic, bytes: chunk.to_vec() },
            };
            self.parts
                .replace_one(doc! {"_id": &id}, part)
                .upsert(true)
                .await
                .with_context(|| format!("writing checkpoint part {id}"))?;
        }
        let head = Head {
            seq: p.seq,
            parts: chunks.len() as u32,
            bytes: json.len() as u64,
            digest: digest(&json),
            at_ms: now_ms(),
        };
        let head_doc = doc! {
            "_id": outlet.as_str(),
            "seq": head.seq as i64,
            "parts": head.parts as i64,
            "bytes": head.bytes as i64,
            "digest": &head.digest,
            "at_ms": head.at_ms,
        };
        self.heads
            .replace_one(doc! {"_id": outlet.as_str()}, head_doc)
            .upsert(true)
            .await
            .with_context(|| format!("writing the checkpoint head of {outlet}"))?;
        if let Some(previous) = previous {
            self.parts
                .delete_many(doc! {"outlet": outlet.as_str(), "seq": {"$lt": previous.seq as i64}})
                .await
                .with_context(|| format!("dropping old checkpoint parts of {outlet}"))?;
        }
        Ok(Some(head))
    }

    /// The outlet's latest checkpoint, checked against its head's digest.
    pub async fn latest(&self, outlet: &OutletId) -> anyhow::Result<Option<(Head, Projection)>> {
        let Some(head) = self.head(outlet).await? else {
            return Ok(None);
        };
        let ids: Vec<String> = (0..head.parts)
            .map(|i| part_id(outlet, head.seq, i))
            .collect();
        let mut parts: Vec<Document> = self
            .parts
            .find(doc! {"_id": {"$in": &ids}})
            .await
            .context("reading checkpoint parts")?
            .try_collect()
            .await
            .context("reading checkpoint parts")?;
        anyhow::ensure!(
            parts.len() == ids.len(),
            "checkpoint {outlet}@{} has {} of its {} parts",
            head.seq,
            parts.len(),
            ids.len()
        );
        parts.sort_by_key(|d| d.get_i64("part").unwrap_or(i64::MAX));
        let mut json = Vec::with_capacity(head.bytes as usize);
        for part in &parts {
            json.extend_from_slice(part.get_binary_generic("data")?);
        }
        anyhow::ensure!(
            digest(&json) == head.digest,
            "checkpoint {outlet}@{} does not match its digest",
            head.seq
        );
        let projection: Projection =
            serde_json::from_slice(&json).context("decoding a checkpoint")?;
        anyhow::ensure!(
            projection.seq == head.seq,
            "checkpoint {outlet}@{} holds seq {}",
            head.seq,
            projection.seq
        );
        Ok(Some((head, projection)))
    }
}
