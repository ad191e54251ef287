//! The Redis side: the outlet scripts, their operations and outcomes, and the outbox.
//!
//! Only `OutletActor` calls `apply`, `snapshot` and `restore`; only `LedgerWriter` reads and
//! trims outboxes; only the WhatsApp worker counts a sender's holds (`sender_holds` and the
//! rest, for whatsapp/caps.rs). Nothing else talks to Redis.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Channel, Counters, HeldLot, IdempotencyKey, LedgerKind, Line, Lot, LotDelta, ReservationId,
    ReservationStatus, Sku,
};
use crate::keys::{ClaimKind, OutletKeys};
use crate::settings::RedisSettings;

const APPLY_BATCH: &str = concat!(
    include_str!("scripts/prelude.lua"),
    include_str!("scripts/reserve.lua"),
    include_str!("scripts/confirm.lua"),
    include_str!("scripts/release.lua"),
    include_str!("scripts/movement.lua"),
    include_str!("scripts/reconcile.lua"),
    include_str!("scripts/apply_batch.lua"),
);

/// Records forgotten per batch call; bounds the extra work a batch may carry.
const FORGET_PER_CALL_MAX: usize = 256;

/// What a caller is told when Redis or MongoDB failed (the log has why).
pub const STORE_DOWN: &str =
    "a data store did not answer; nothing was changed unless said otherwise: retry shortly";

/// Who made a change, as its ledger document's `by` says: the label of the API key of the
/// request, or the part of shelfsync that acted on its own (`expiry`, `reroute`, `mqtt`,
/// `whatsapp`, `import`; the reconciler's heals say `reconciler`).
pub type By = String;

/// One operation of an outlet batch, as the scripts read it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Reserve {
        id: ReservationId,
        idem: IdempotencyKey,
        hash: String,
        lines: Vec<Line>,
        expires_at: i64,
        channel: Channel,
        #[serde(skip_serializing_if = "Option::is_none")]
        customer_ref: Option<String>,
        /// The delivery PIN of a routed hold: where it may be re-routed to.
        #[serde(skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
        by: By,
    },
    Confirm {
        id: ReservationId,
        payment_ref: String,
        by: By,
    },
    Release {
        id: ReservationId,
        reason: ReleaseReason,
        /// The hold that took over this one's cart (reason `rerouted`).
        #[serde(skip_serializing_if = "Option::is_none")]
        rerouted_to: Option<ReservationId>,
        by: By,
    },
    Movement {
        /// The dedup key: the event id, or `transfer_in:{event id}` for the receiving half.
        key: String,
        hash: String,
        kind: LedgerKind,
        sku: Sku,
        qty: i64,
        event_id: String,
        event_at: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        counterpart: Option<String>,
        /// The lot units going out come from (else the lots good now, earliest expiry first).
        #[serde(skip_serializing_if = "Option::is_none")]
        lot: Option<String>,
        /// The lots units coming in go into (the rest are loose).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        lots: Vec<LotIn>,
        by: By,
    },
    /// Writes off what is left of a lot at its expiry (the outlet's own operation).
    ExpireLot { sku: Sku, lot: String, by: By },
    /// The reconciler's read of every counter at one seq.
    Audit,
    /// The reconciler's correction of drifted counters, as deltas.
    Heal {
        lines: Vec<HealLine>,
        /// The outlet load the audit saw (see `OutletActor`); not sent to Redis. A heal
        /// computed before a reload would undo the reload's numbers, so it is dropped.
        #[serde(skip)]
        load: u64,
    },
}

impl Op {
    /// The operation's name in metrics (`shelfsync_shed_total{operation}`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Reserve { .. } => "hold",
            Op::Confirm { .. } => "confirm",
            Op::Release {
                reason: ReleaseReason::Cancelled,
                ..
            } => "cancel",
            Op::Release {
                reason: ReleaseReason::Expired,
                ..
            } => "expiry",
            Op::Release {
                reason: ReleaseReason::Rerouted,
                ..
            } => "reroute_release",
            Op::Movement { .. } => "movement",
            Op::ExpireLot { .. } => "lot_expiry",
            Op::Audit => "audit",
            Op::Heal { .. } => "heal",
        }
    }
}

/// Units coming into one lot (`Op::Movement::lots`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LotIn {
    pub lot: String,
    pub made_at: i64,
    pub expires_at: i64,
    pub qty: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealLine {
    pub sku: Sku,
    pub d_on_hand: i64,
    pub d_reserved: i64,
    /// The SKU's lots' corrections (each with the ledger's times).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotDelta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    Cancelled,
    Expired,
    Rerouted,
}

/// A reservation as Redis keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResRecord {
    pub id: ReservationId,
    pub status: ReservationStatus,
    pub lines: Vec<Line>,
    pub expires_at: i64,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<String>,
    pub idem: IdempotencyKey,
    pub hash: String,
    pub created_at: i64,
    pub held_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// The delivery PIN of a routed hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// The hold at another outlet that took over this cart (status `rerouted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerouted_to: Option<ReservationId>,
    /// The lot units the hold holds (its lines' units beyond them are loose ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<HeldLot>,
}

/// The answer to a movement, kept so that a replay returns it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementResult {
    pub seq: u64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<i64>,
    /// The lots the movement moved, and by how much (none: only loose units moved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotDelta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLine {
    pub sku: Sku,
    pub requested: i64,
    pub available: i64,
}

/// A SKU's counters after a change, as a script returns them.
#[derive(Debug, Clone, Deserialize)]
pub struct StockRow {
    pub sku: Sku,
    pub on_hand: i64,
    pub reserved: i64,
    pub seq: u64,
    /// The SKU's lots after the change, earliest expiry first (none: it has no lots).
    #[serde(default)]
    pub lots: Vec<Lot>,
}

impl StockRow {
    /// The row's lots as the stock view keeps them.
    pub fn lots(&self) -> crate::stock_view::Lots {
        self.lots.clone().into()
    }

    pub fn counters(&self) -> Counters {
        Counters {
            on_hand: self.on_hand,
            reserved: self.reserved,
            seq: self.seq,
        }
    }
}

/// What a script decided for one operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        seq: u64,
        #[serde(default)]
        res: Option<ResRecord>,
        #[serde(default)]
        result: Option<MovementResult>,
        stock: Vec<StockRow>,
    },
    Replay {
        #[serde(default)]
        res: Option<ResRecord>,
        #[serde(default)]
        result: Option<MovementResult>,
    },
    Conflict {
        #[serde(default)]
        res: Option<ResRecord>,
        message: String,
    },
    OutOfStock {
        lines: Vec<ShortLine>,
    },
    NotFound,
    Expired {
        res: ResRecord,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        stock: Vec<StockRow>,
    },
    Noop {
        res: ResRecord,
    },
    Invalid {
        field: String,
        message: String,
    },
    /// A lot expiry that had nothing to do (`gone`, `not_due`) or must wait (`held`).
    Skipped {
        reason: String,
    },
    /// An invariant did not hold in Redis: a bug or a second writer.
    Broken {
        message: String,
    },
    Audit {
        seq: u64,
        on_hand: BTreeMap<Sku, i64>,
        reserved: BTreeMap<Sku, i64>,
        #[serde(default)]
        lots: BTreeMap<Sku, Vec<Lot>>,
    },
    Healed {
        stock: Vec<StockRow>,
    },
}

impl Outcome {
    /// Counters this outcome changed, if it changed any.
    pub fn stock(&self) -> &[StockRow] {
        match self {
            Outcome::Ok { stock, .. }
            | Outcome::Expired { stock, .. }
            | Outcome::Healed { stock } => stock,
            _ => &[],
        }
    }

    /// The reservation this outcome left, if it names one.
    pub fn reservation(&self) -> Option<&ResRecord> {
        match self {
            Outcome::Ok { res, .. }
            | Outcome::Replay { res, .. }
            | Outcome::Conflict { res, .. } => res.as_ref(),
            Outcome::Expired { res, .. } | Outcome::Noop { res } => Some(res),
            _ => None,
        }
    }
}

/// The answer to one batch.
#[derive(Debug, Deserialize)]
pub struct BatchReply {
    #[serde(default)]
    pub results: Vec<Outcome>,
    #[serde(default)]
    pub lost: bool,
    #[serde(default)]
    pub backlog: bool,
    /// Another process acquired the outlet's lease: nothing was applied.
    #[serde(default)]
    pub fenced: bool,
}

/// A write refused because the outlet's epoch is no longer the caller's fencing token:
/// another process owns the outlet now, and nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("outlet {0} is owned by another process now (fenced); nothing was written")]
pub struct Fenced(pub String);

/// Everything a batch call needs beside its operations.
#[derive(Debug, Clone)]
pub struct BatchArgs<'a> {
    pub outlet: &'a str,
    pub now_ms: i64,
    pub seen_seq: u64,
    pub res_retain_ms: i64,
    pub event_retain_ms: i64,
    pub outbox_max: u64,
    /// The caller's fencing token: the epoch of its lease on the outlet.
    pub token: u64,
    /// The caller's node id (its lease reads `"{node} {token}"`).
    pub node: &'a str,
}

/// An outlet's state as read atomically from Redis.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub seq: u64,
    pub counters: BTreeMap<Sku, Counters>,
    pub held: Vec<ResRecord>,
    /// Every SKU's lots, earliest expiry first (SKUs without lots are not here).
    pub lots: BTreeMap<Sku, Vec<Lot>>,
}

/// An outlet's counters and lots as read at one seq (`RedisStore::counters`).
#[derive(Debug, Clone, Default)]
pub struct OutletCounters {
    pub seq: u64,
    pub counters: BTreeMap<Sku, Counters>,
    /// Every SKU's lots, earliest expiry first (SKUs without lots are not here).
    pub lots: BTreeMap<Sku, Vec<Lot>>,
}

/// What `restore.lua` writes: an outlet rebuilt from the ledger.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct RestorePlan {
    pub seq: u64,
    /// `[sku, on_hand, reserved, sku_seq]`
    pub counters: Vec<(Sku, i64, i64, u64)>,
    /// `[id, reservation JSON]`
    pub reservations: Vec<(String, String)>,
    /// `[Idempotency-Key, {id, hash} JSON]`
    pub idem: Vec<(String, String)>,
    /// `[event key, {hash, result} JSON]`
    pub events: Vec<(String, String)>,
    /// `[forget at (ms), member]`
    pub forget: Vec<(i64, String)>,
    /// `[sku, its lots JSON]`
    pub lots: Vec<(Sku, String)>,
    /// Chain-wide claims of the restored client keys, with their remaining lifetime (s);
    /// written after the script (they are not outlet keys).
    #[serde(skip)]
    pub claims: Vec<(ClaimKind, String, u64)>,
}

/// When `restore` may overwrite an outlet's existing Redis state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// Only an outlet with no state is written.
    IfMissing,
    /// Existing state is replaced (Redis came back behind the ledger).
    Replace,
    /// Existing state is replaced unless its seq is ahead of the plan's.
    UnlessAhead,
}

/// A stream entry as XRANGE returns it: id and field-value pairs.
type RawStreamEntry = (String, Vec<(String, String)>);

/// One outbox entry: a ledger document's JSON at its seq.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub seq: u64,
    pub json: String,
}

/// Who holds a client key's claim after `RedisStore::claim`, and whether that call made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub fresh: bool,
}

/// One Redis, or a Redis Cluster through the redis crate's cluster client (which follows
/// MOVED and ASK, and routes every command and script by its first key's slot). Both
/// reconnect on their own; clones share the connections.
///
/// Every command runs on the runtime that connected (`Home`: the service's main system).
/// The redis crate starts a reconnect from the task that finds the connection lost, on that
/// task's runtime, and every later command awaits that one shared attempt, whose backoff
/// timer belongs to the runtime it started on. A command from an HTTP worker during a Redis
/// outage started it on the worker's runtime; once the server stopped its workers (a graceful
/// stop), the outlet actors and the ledger writer, still draining on the main system, awaited
/// a timer of a runtime that was gone and panicked ("A Tokio 1.x context was found, but it is
/// being shutdown"; seen in tests/hardening.rs, readyz_…, about one run in five).
#[derive(Clone)]
struct Conn {
    link: Link,
    home: Home,
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The runtime a connection belongs to, and the thread that drives it (the main system is a
/// current-thread runtime: a command issued on that thread needs no hop).
#[derive(Clone)]
struct Home {
    handle: tokio::runtime::Handle,
    thread: std::thread::ThreadId,
}

impl Home {
    fn here() -> Self {
        Self {
            handle: tokio::runtime::Handle::current(),
            thread: std::thread::current().id(),
        }
    }

    fn is_current(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    /// Runs `command` on the home runtime; its answer, or an error when it could not run
    /// there (the service is stopping).
    fn run<T: Send + 'static>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
    ) -> RedisFuture<'static, T> {
        let task = self.handle.spawn(command);
        Box::pin(async move {
            task.await.map_err(|e| {
                redis::RedisError::from(std::io::Error::other(format!(
                    "the redis command did not run: {e}"
                )))
            })?
        })
    }
}

impl Conn {
    fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if self.home.is_current() {
            return self.link.req_packed_command(cmd);
        }
        let (mut link, cmd) = (self.link.clone(), cmd.clone());
        (self.home).run(async move { link.req_packed_command(&cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if self.home.is_current() {
            return self.link.req_packed_commands(pipeline, offset, count);
        }
        let (mut link, pipeline) = (self.link.clone(), pipeline.clone());
        (self.home).run(async move { link.req_packed_commands(&pipeline, offset, count).await })
    }

    fn get_db(&self) -> i64 {
        self.link.get_db()
    }
}

#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// For the Pub/Sub connection of the follower (a connection of its own), one per server
    /// of `redis.url`.
    pubsub: Arc<[redis::Client]>,
    prefix: Arc<str>,
    apply_batch: Arc<Script>,
    snapshot: Arc<Script>,
    restore: Arc<Script>,
    lease: Arc<Script>,
    alerts: Arc<Script>,
}

impl RedisStore {
    /// Connects once; clones share the connection (it is multiplexed).
    pub async fn connect(settings: &RedisSettings) -> anyhow::Result<Self> {
        let urls: Vec<&str> = settings.url.expose().split(',').map(str::trim).collect();
        if !settings.cluster && urls.len() > 1 {
            anyhow::bail!(
                "redis.url names several servers: set redis.cluster = true for a Redis Cluster"
            );
        }
        let connect_timeout = Duration::from_secs(2);
        let response_timeout = Duration::from_millis(settings.response_timeout_ms);
        let pubsub = (urls.iter())
            .map(|u| redis::Client::open(*u).context("parsing redis.url"))
            .collect::<anyhow::Result<Arc<[_]>>>()?;
        let client = pubsub[0].clone();
        let conn = if settings.cluster {
            let cluster = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                .retries(2)
                .max_retry_wait(500)
                .build()
                .context("parsing redis.url (the cluster's seed nodes)")?;
            Link::Cluster(
                (cluster.get_async_connection().await)
                    .context("connecting to the redis cluster")?,
            )
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            Link::Single(
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .context("connecting to redis")?,
            )
        };
        let conn = Conn {
            link: conn,
            home: Home::here(),
        };
        Ok(Self {
            conn,
            pubsub,
            prefix: settings.key_prefix.as_str().into(),
            apply_batch: Arc::new(Script::new(APPLY_BATCH)),
            snapshot: Arc::new(Script::new(include_str!("scripts/snapshot.lua"))),
            restore: Arc::new(Script::new(include_str!("scripts/restore.lua"))),
            alerts: Arc::new(Script::new(include_str!("scripts/alerts.lua"))),
            lease: Arc::new(Script::new(include_str!("scripts/lease.lua"))),
        })
    }

    pub fn keys(&self, outlet: &crate::domain::OutletId) -> OutletKeys {
        OutletKeys::new(&self.prefix, outlet)
    }

    /// The channel of alerts' changes (`follow_commits` subscribes to it too).
    pub fn alerts_channel(&self) -> String {
        crate::keys::alerts(&self.prefix)
    }

    /// Claims a client key (`Idempotency-Key`, `event_id`) for `outlet` chain-wide for
    /// `ttl_secs`, and returns the outlet that holds the claim: `outlet` itself, or the one
    /// that claimed it first. Outlet scripts remember keys per outlet; this makes the same key
    /// sent to another outlet a conflict instead of a second write.
    pub async fn claim(
        &self,
        kind: ClaimKind,
        key: &str,
        outlet: &crate::domain::OutletId,
        ttl_secs: u64,
    ) -> anyhow::Result<Claim> {
        let mut conn = self.conn.clone();
        let previous: Option<String> = redis::cmd("SET")
            .arg(crate::keys::claim(&self.prefix, kind, key))
            .arg(outlet.as_str())
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut conn)
            .await
            .context("claiming a client key")?;
        Ok(match previous {
            Some(owner) => Claim {
                owner,
                fresh: false,
            },
            None => Claim {
                owner: outlet.to_string(),
                fresh: true,
            },
        })
    }

    /// The outlet holding the claim of a client key, if any.
    ///
    /// (`claim` answers the owner and whether that call made the claim.)
    pub async fn claim_owner(&self, kind: ClaimKind, key: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(crate::keys::claim(&self.prefix, kind, key))
            .query_async(&mut conn)
            .await
            .context("reading a client key claim")
    }

    /// Whether `idem` is committed at the outlet of `keys` (a hold made with it, within the
    /// key's retention).
    pub async fn key_committed(&self, keys: &OutletKeys, idem: &str) -> anyhow::Result<bool> {
        let mut conn = self.conn.clone();
        redis::cmd("HEXISTS")
            .arg(&keys.idempotency)
            .arg(idem)
            .query_async(&mut conn)
            .await
            .context("reading an Idempotency-Key")
    }

    /// Leases a client key for a routed request (30 s at most); `None` when another request
    /// holds the lease.
    pub async fn lease(&self, kind: ClaimKind, key: &str) -> anyhow::Result<Option<String>> {
        (self
            .lease_at(&crate::keys::lease(&self.prefix, kind, key))
            .await)
            .context("leasing a client key")
    }

    /// Sets `key` to a fresh nonce for 30 s unless it is set; the nonce, or `None` when
    /// another holds the lease.
    async fn lease_at(&self, key: &str) -> anyhow::Result<Option<String>> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&nonce)
            .arg("NX")
            .arg("EX")
            .arg(30)
            .query_async(&mut conn)
            .await?;
        Ok(set.map(|_| nonce))
    }

    /// Leases a WhatsApp sender while its order is decided against the per-sender caps (30 s
    /// at most); `None` when another process is deciding one of theirs.
    pub async fn lease_sender(&self, sender: &str) -> anyhow::Result<Option<String>> {
        (self
            .lease_at(&crate::keys::whatsapp_sender_lease(&self.prefix, sender))
            .await)
            .context("leasing a WhatsApp sender")
    }

    pub async fn unlease_sender(&self, sender: &str, nonce: &str) -> anyhow::Result<()> {
        let key = crate::keys::whatsapp_sender_lease(&self.prefix, sender);
        (self.delete_if(&key, nonce).await).context("releasing a WhatsApp sender's lease")
    }

    /// The holds of a WhatsApp sender whose time has not run out by `now_ms`; those past it
    /// are forgotten on the way, in the same atomic round trip.
    pub async fn sender_holds(
        &self,
        sender: &str,
        now_ms: i64,
    ) -> anyhow::Result<Vec<ReservationId>> {
        let key = crate::keys::whatsapp_sender_holds(&self.prefix, sender);
        let mut conn = self.conn.clone();
        let (live,): (Vec<String>,) = redis::pipe()
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now_ms)
            .ignore()
            .cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .context("reading a WhatsApp sender's holds")?;
        (live.iter())
            .map(|id| ReservationId::parse("id", id).context("a WhatsApp sender's hold"))
            .collect()
    }

    /// Counts a hold of a WhatsApp sender until `expires_at` (ms). The set expires with the
    /// last of its holds (set when it has no expiry, else moved only later).
    pub async fn add_sender_hold(
        &self,
        sender: &str,
        id: &ReservationId,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        let key = crate::keys::whatsapp_sender_holds(&self.prefix, sender);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(expires_at)
            .arg(id.as_str())
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(expires_at)
            .arg("NX")
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(expires_at)
            .arg("GT")
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .context("counting a WhatsApp sender's hold")
    }

    /// Stops counting holds of a WhatsApp sender that ended (confirmed, cancelled, expired).
    pub async fn forget_sender_holds(
        &self,
        sender: &str,
        ids: &[ReservationId],
    ) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(crate::keys::whatsapp_sender_holds(&self.prefix, sender))
            .arg(ids.iter().map(ReservationId::as_str).collect::<Vec<_>>())
            .query_async::<i64>(&mut conn)
            .await
            .context("forgetting a WhatsApp sender's ended holds")?;
        Ok(())
    }

    pub async fn unlease(&self, kind: ClaimKind, key: &str, nonce: &str) -> anyhow::Result<()> {
        self.delete_if(&crate::keys::lease(&self.prefix, kind, key), nonce)
            .await
            .context("releasing a lease")
    }

    /// Deletes `key` if it holds `value`.
    async fn delete_if(&self, key: &str, value: &str) -> anyhow::Result<()> {
        const DELETE_IF: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        let mut conn = self.conn.clone();
        redis::cmd("EVAL")
            .arg(DELETE_IF)
            .arg(1)
            .arg(key)
            .arg(value)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// Gives up `outlet`'s claim of a client key (a routed hold that found no stock there),
    /// leaving another outlet's claim alone.
    pub async fn release_claim(
        &self,
        kind: ClaimKind,
        key: &str,
        outlet: &crate::domain::OutletId,
    ) -> anyhow::Result<()> {
        self.delete_if(
            &crate::keys::claim(&self.prefix, kind, key),
            outlet.as_str(),
        )
        .await
        .context("releasing a client key claim")
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .context("PING")?;
        Ok(())
    }

    /// Runs one batch of an outlet's operations in one round trip. EVALSHA falls back to
    /// EVAL when Redis has forgotten the script (NOSCRIPT after a restart).
    pub async fn apply(
        &self,
        keys: &OutletKeys,
        args: &BatchArgs<'_>,
        ops: &[&Op],
    ) -> anyhow::Result<BatchReply> {
        let ops_json = serde_json::to_string(ops).context("encoding batch")?;
        let mut invocation = self.apply_batch.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.key(&keys.epoch).key(&keys.lease);
        invocation
            .arg(args.outlet)
            .arg(args.now_ms)
            .arg(ops_json)
            .arg(args.seen_seq)
            .arg(args.res_retain_ms)
            .arg(args.event_retain_ms)
            .arg(args.outbox_max)
            .arg(FORGET_PER_CALL_MAX)
            .arg(args.token)
            .arg(args.node)
            .arg(crate::keys::commits(&self.prefix));
        let mut conn = self.conn.clone();
        let raw: String = invocation.invoke_async(&mut conn).await.with_context(|| {
            format!(
                "applying a batch of {} to outlet {}",
                ops.len(),
                args.outlet
            )
        })?;
        let reply: BatchReply =
            serde_json::from_str(&raw).with_context(|| format!("decoding batch reply {raw}"))?;
        if !reply.lost && !reply.backlog && !reply.fenced && reply.results.len() != ops.len() {
            anyhow::bail!("batch of {} got {} results", ops.len(), reply.results.len());
        }
        Ok(reply)
    }

    /// A connection of its own subscribed to the commits of every outlet (`keys::commits`):
    /// to the first server of `redis.url` that answers (on a cluster any node will do, since
    /// PUBLISH reaches every node).
    pub async fn follow_commits(&self) -> anyhow::Result<redis::aio::PubSub> {
        let mut failed = Vec::new();
        for client in self.pubsub.iter() {
            let connected =
                tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await;
            let mut pubsub = match connected {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    failed.push(e.to_string());
                    continue;
                }
                Err(_) => {
                    failed.push("timed out".into());
                    continue;
                }
            };
            pubsub
                .subscribe(&[
                    crate::keys::commits(&self.prefix),
                    crate::keys::alerts(&self.prefix),
                ])
                .await
                .context("subscribing to the commits and alerts")?;
            return Ok(pubsub);
        }
        anyhow::bail!("connecting to redis for commits: {}", failed.join("; "))
    }

    /// The outlet's seq and every SKU's numbers, read in one MULTI (they belong to one seq);
    /// `None` when Redis has no state for the outlet. Lighter than `snapshot`: no
    /// reservations.
    pub async fn counters(&self, keys: &OutletKeys) -> anyhow::Result<Option<OutletCounters>> {
        type Numbers = BTreeMap<String, i64>;
        let mut conn = self.conn.clone();
        let (seq, on_hand, reserved, sku_seq, lots): (
            Option<u64>,
            Numbers,
            Numbers,
            Numbers,
            BTreeMap<String, String>,
        ) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(&keys.seq)
            .cmd("HGETALL")
            .arg(&keys.on_hand)
            .cmd("HGETALL")
            .arg(&keys.reserved)
            .cmd("HGETALL")
            .arg(&keys.sku_seq)
            .cmd("HGETALL")
            .arg(&keys.lots)
            .query_async(&mut conn)
            .await
            .context("reading an outlet's counters")?;
        let Some(seq) = seq else {
            return Ok(None);
        };
        let skus = |m: Numbers| -> anyhow::Result<BTreeMap<Sku, i64>> {
            (m.into_iter())
                .map(|(sku, n)| Ok((Sku::parse("sku", &sku)?, n)))
                .collect::<Result<_, crate::domain::Invalid>>()
                .context("a SKU in redis")
        };
        let sku_seq = (skus(sku_seq)?.into_iter())
            .map(|(sku, n)| (sku, n.max(0) as u64))
            .collect();
        let counters = join_counters(skus(on_hand)?, &skus(reserved)?, &sku_seq);
        let lots = (lots.into_iter())
            .map(|(sku, json)| {
                let lots = serde_json::from_str(&json).context("decoding a SKU's lots")?;
                Ok((Sku::parse("sku", &sku)?, lots))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(OutletCounters {
            seq,
            counters,
            lots,
        }))
    }

    /// Raises and clears an outlet's alerts (keys.rs `alerts`, scripts/alerts.lua), fenced by
    /// the caller's lease token: per raise whether it created the field, per clear the alert
    /// it removed. Only those are announced, so no crossing is announced twice, whoever
    /// looks; `None` when the caller no longer owns the outlet.
    pub async fn alert_changes(
        &self,
        keys: &OutletKeys,
        token: u64,
        node: &str,
        raise: &[(String, String)],
        clear: &[String],
    ) -> anyhow::Result<Option<(Vec<bool>, Vec<Option<String>>)>> {
        if raise.is_empty() && clear.is_empty() {
            return Ok(Some((Vec::new(), Vec::new())));
        }
        #[derive(Deserialize)]
        struct Done {
            #[serde(default)]
            fenced: bool,
            #[serde(default)]
            raised: serde_json::Value,
            #[serde(default)]
            cleared: serde_json::Value,
        }
        let asked = serde_json::json!({"raise": raise, "clear": clear}).to_string();
        let mut invocation = self.alerts.prepare_invoke();
        invocation
            .key(&keys.alerts)
            .key(&keys.epoch)
            .key(&keys.lease)
            .arg(token)
            .arg(node)
            .arg(asked);
        let mut conn = self.conn.clone();
        let raw: String = (invocation.invoke_async(&mut conn).await).context("changing alerts")?;
        let done: Done = serde_json::from_str(&raw).context("the alerts script's answer")?;
        if done.fenced {
            return Ok(None);
        }
        // cjson encodes an empty table as {}: no raises or no clears.
        let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
        let raised = list(&done.raised)
            .iter()
            .map(|v| v.as_bool() == Some(true))
            .collect();
        let cleared = (list(&done.cleared).iter())
            .map(|v| v.as_str().map(str::to_owned))
            .collect();
        Ok(Some((raised, cleared)))
    }

    /// The raised alerts of an outlet, as stored (JSON).
    pub async fn raised_alerts(&self, keys: &OutletKeys) -> anyhow::Result<Vec<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("HVALS")
            .arg(&keys.alerts)
            .query_async(&mut conn)
            .await
            .context("reading an outlet's alerts")
    }

    /// Tells the other processes of an alert's change (keys.rs `alerts`).
    pub async fn publish_alert(&self, json: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(crate::keys::alerts(&self.prefix))
            .arg(json)
            .query_async::<()>(&mut conn)
            .await
            .context("publishing an alert")
    }

    /// Sets (`Some`) or clears the head cook's number of one outlet and SKU (kitchen.rs).
    pub async fn set_cook(&self, field: &str, json: Option<&str>) -> anyhow::Result<()> {
        let key = crate::keys::kitchen_cook(&self.prefix);
        let mut conn = self.conn.clone();
        let cmd = match json {
            Some(json) => {
                let mut c = redis::cmd("HSET");
                c.arg(&key).arg(field).arg(json);
                c
            }
            None => {
                let mut c = redis::cmd("HDEL");
                c.arg(&key).arg(field);
                c
            }
        };
        cmd.query_async::<()>(&mut conn)
            .await
            .context("writing the head cook's number")
    }

    /// Every number the head cook entered, by `{outlet}/{sku}`.
    pub async fn cook_numbers(&self) -> anyhow::Result<HashMap<String, String>> {
        let mut conn = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(crate::keys::kitchen_cook(&self.prefix))
            .query_async(&mut conn)
            .await
            .context("reading the head cook's numbers")
    }

    /// Adds units sold per (outlet, minute) to the war room's counts (kept two hours).
    pub async fn count_sales(
        &self,
        sold: &[(crate::domain::OutletId, i64, i64)],
    ) -> anyhow::Result<()> {
        if sold.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (outlet, minute, qty) in sold {
            let key = crate::keys::sales_minute(&self.prefix, *minute);
            pipe.cmd("HINCRBY")
                .arg(&key)
                .arg(outlet.as_str())
                .arg(qty)
                .ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(7200).ignore();
        }
        let mut conn = self.conn.clone();
        (pipe.query_async::<()>(&mut conn).await).context("counting sales by minute")
    }

    /// Units sold per (outlet, minute) over the minutes `from..=to`.
    pub async fn sales_by_minute(
        &self,
        from: i64,
        to: i64,
    ) -> anyhow::Result<HashMap<(crate::domain::OutletId, i64), i64>> {
        let mut pipe = redis::pipe();
        for minute in from..=to {
            pipe.cmd("HGETALL")
                .arg(crate::keys::sales_minute(&self.prefix, minute));
        }
        let mut conn = self.conn.clone();
        let all: Vec<HashMap<String, i64>> =
            (pipe.query_async(&mut conn).await).context("reading sales by minute")?;
        let mut out = HashMap::new();
        for (minute, counts) in (from..=to).zip(all) {
            for (outlet, qty) in counts {
                if let Ok(outlet) = crate::domain::OutletId::parse("outlet", &outlet) {
                    out.insert((outlet, minute), qty);
                }
            }
        }
        Ok(out)
    }

    /// The outlet's seq now (`None` when Redis has no state for it).
    pub async fn outlet_seq(&self, keys: &OutletKeys) -> anyhow::Result<Option<u64>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(&keys.seq)
            .query_async(&mut conn)
            .await
            .context("reading an outlet's seq")
    }

    /// The outlet's live state, or `None` when Redis has nothing for it.
    pub async fn snapshot(&self, keys: &OutletKeys) -> anyhow::Result<Option<Snapshot>> {
        let mut invocation = self.snapshot.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        let mut conn = self.conn.clone();
        let raw: Option<(u64, String, String, String, Vec<String>, String)> = invocation
            .invoke_async(&mut conn)
            .await
            .context("reading an outlet snapshot")?;
        let Some((seq, on_hand, reserved, sku_seq, held, lots)) = raw else {
            return Ok(None);
        };
        let on_hand: BTreeMap<Sku, i64> = serde_json::from_str(&on_hand)?;
        let reserved: BTreeMap<Sku, i64> = serde_json::from_str(&reserved)?;
        let sku_seq: BTreeMap<Sku, u64> = serde_json::from_str(&sku_seq)?;
        let counters = join_counters(on_hand, &reserved, &sku_seq);
        let held = held
            .iter()
            .map(|json| serde_json::from_str(json).context("decoding a held reservation"))
            .collect::<anyhow::Result<_>>()?;
        let lots = serde_json::from_str(&lots).context("decoding an outlet's lots")?;
        Ok(Some(Snapshot {
            seq,
            counters,
            held,
            lots,
        }))
    }

    /// Writes the chain-wide claims of a rebuilt outlet's client keys (a claim already there
    /// stays), then the outlet, if `token` is still the outlet's epoch (else `Fenced`).
    /// `false` when `mode` left the existing state untouched.
    pub async fn restore(
        &self,
        outlet: &crate::domain::OutletId,
        plan: &RestorePlan,
        mode: RestoreMode,
        fence: (&str, u64),
    ) -> anyhow::Result<bool> {
        let mut invocation = self.restore.prepare_invoke();
        let keys = self.keys(outlet);
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.key(&keys.epoch).key(&keys.lease);
        let mode_arg = match mode {
            RestoreMode::IfMissing => "0",
            RestoreMode::Replace => "1",
            RestoreMode::UnlessAhead => "2",
        };
        invocation
            .arg(serde_json::to_string(plan)?)
            .arg(mode_arg)
            .arg(fence.1)
            .arg(fence.0);
        let mut conn = self.conn.clone();
        // Claims first: SET NX is idempotent, and a restore that fails after its script would
        // otherwise be found done on the retry, with its claims never written.
        let claim = |(kind, key, ttl_secs): &(ClaimKind, String, u64)| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(crate::keys::claim(&self.prefix, *kind, key))
                .arg(outlet.as_str())
                .arg("NX")
                .arg("EX")
                .arg((*ttl_secs).max(1));
            cmd
        };
        if conn.is_cluster() {
            // The claims lie in many slots: no pipeline can carry them on a cluster.
            use futures_util::StreamExt;
            let sets = futures_util::stream::iter(plan.claims.iter().map(|c| {
                let (cmd, mut conn) = (claim(c), conn.clone());
                async move { cmd.query_async::<()>(&mut conn).await }
            }));
            let mut sets = sets.buffer_unordered(64);
            while let Some(set) = sets.next().await {
                set.context("restoring client key claims")?;
            }
        } else {
            for chunk in plan.claims.chunks(1000) {
                let mut pipe = redis::pipe();
                for c in chunk {
                    pipe.add_command(claim(c)).ignore();
                }
                pipe.query_async::<()>(&mut conn)
                    .await
                    .context("restoring client key claims")?;
            }
        }
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .context("restoring an outlet")?;
        if done < 0 {
            return Err(Fenced(outlet.to_string()).into());
        }
        Ok(done == 1)
    }

    async fn lease_call(
        &self,
        keys: &OutletKeys,
        mode: &str,
        node: &str,
        token: u64,
        ttl_ms: u64,
    ) -> anyhow::Result<u64> {
        let mut invocation = self.lease.prepare_invoke();
        invocation
            .key(&keys.lease)
            .key(&keys.epoch)
            .arg(mode)
            .arg(node)
            .arg(token)
            .arg(ttl_ms);
        let mut conn = self.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .with_context(|| format!("{mode} of the lease {}", keys.lease))
    }

    /// Takes the outlet's lease for `node` when it is free (with `takeover`, also when an
    /// earlier run of the same node holds it) and returns the new fencing token; `None` when
    /// it is held.
    pub async fn acquire_lease(
        &self,
        keys: &OutletKeys,
        node: &str,
        ttl_ms: u64,
        takeover: bool,
    ) -> anyhow::Result<Option<u64>> {
        let mode = if takeover { "takeover" } else { "acquire" };
        let epoch = self.lease_call(keys, mode, node, 0, ttl_ms).await?;
        Ok((epoch > 0).then_some(epoch))
    }

    /// Pushes the lease's expiry out; false when `node` with `token` no longer holds it.
    pub async fn renew_lease(
        &self,
        keys: &OutletKeys,
        node: &str,
        token: u64,
        ttl_ms: u64,
    ) -> anyhow::Result<bool> {
        Ok(self.lease_call(keys, "renew", node, token, ttl_ms).await? == 1)
    }

    /// Gives the lease up if `node` with `token` holds it.
    pub async fn release_lease(
        &self,
        keys: &OutletKeys,
        node: &str,
        token: u64,
    ) -> anyhow::Result<bool> {
        Ok(self.lease_call(keys, "release", node, token, 0).await? == 1)
    }

    /// How long the outlet's lease has left, if anyone holds it.
    pub async fn lease_ttl(&self, keys: &OutletKeys) -> anyhow::Result<Option<Duration>> {
        let mut conn = self.conn.clone();
        let ms: i64 = redis::cmd("PTTL")
            .arg(&keys.lease)
            .query_async(&mut conn)
            .await
            .context("reading a lease's time")?;
        Ok((ms >= 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Who holds the outlet's lease (`"{node} {epoch}"`), if anyone.
    pub async fn lease_holder(&self, keys: &OutletKeys) -> anyhow::Result<Option<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(&keys.lease)
            .query_async(&mut conn)
            .await
            .context("reading a lease")
    }

    /// Records `node`'s heartbeat and returns the nodes that beat within `live_ms` (itself
    /// included), each with the time of its last beat (ms); forgets nodes silent for ten
    /// times that.
    pub async fn heartbeat(&self, node: &str, live_ms: u64) -> anyhow::Result<Vec<(String, i64)>> {
        let now = crate::domain::now_ms();
        let key = crate::keys::members(&self.prefix);
        let mut conn = self.conn.clone();
        let (live,): (Vec<(String, i64)>,) = redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg(now)
            .arg(node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now - 10 * live_ms as i64)
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(now - live_ms as i64)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .context("heartbeat")?;
        Ok(live)
    }

    /// True the first time `token` is seen within `ttl_ms` (chain-wide): the signature of a
    /// forwarded request is taken once.
    pub async fn first_use(&self, token: &str, ttl_ms: u64) -> anyhow::Result<bool> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(crate::keys::used_signature(&self.prefix, token))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await
            .context("remembering a forwarded request's signature")?;
        Ok(set.is_some())
    }

    /// Records where `node`'s HTTP API is reached (for requests forwarded to it).
    pub async fn advertise(&self, node: &str, url: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(crate::keys::addresses(&self.prefix))
            .arg(node)
            .arg(url)
            .query_async::<()>(&mut conn)
            .await
            .context("advertising this process's address")
    }

    /// Where the process that owns `outlet` now is reached: its node id and address, or
    /// `None` when nobody holds the lease or its holder advertised no address.
    pub async fn owner_address(
        &self,
        keys: &OutletKeys,
    ) -> anyhow::Result<Option<(String, String)>> {
        let Some(holder) = self.lease_holder(keys).await? else {
            return Ok(None);
        };
        let node = holder.split(' ').next().unwrap_or_default().to_owned();
        let mut conn = self.conn.clone();
        let url: Option<String> = redis::cmd("HGET")
            .arg(crate::keys::addresses(&self.prefix))
            .arg(&node)
            .query_async(&mut conn)
            .await
            .context("reading a process's address")?;
        Ok(url.map(|url| (node, url)))
    }

    /// Removes `node` from the live processes (a graceful stop).
    pub async fn leave(&self, node: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(crate::keys::members(&self.prefix))
            .arg(node)
            .query_async::<i64>(&mut conn)
            .await
            .context("leaving the members")?;
        Ok(())
    }

    /// A reservation, and the outlet's seq in the same round trip (0 when the outlet has no
    /// state: a "not found" from an outlet whose state is gone is no answer).
    pub async fn reservation(
        &self,
        keys: &OutletKeys,
        id: &ReservationId,
    ) -> anyhow::Result<(Option<ResRecord>, u64)> {
        let mut conn = self.conn.clone();
        let (raw, seq): (Option<String>, Option<u64>) = redis::pipe()
            .atomic()
            .cmd("HGET")
            .arg(&keys.reservations)
            .arg(id.as_str())
            .cmd("GET")
            .arg(&keys.seq)
            .query_async(&mut conn)
            .await
            .context("reading a reservation")?;
        let res = raw
            .map(|json| serde_json::from_str(&json).context("decoding a reservation"))
            .transpose()?;
        Ok((res, seq.unwrap_or(0)))
    }

    /// One step of a scan of the outlet's reservations (`HSCAN`, about `count` at a time):
    /// the next cursor (0 when the scan is done) and the records. A record may come twice in
    /// one scan (Redis's guarantee is at least once).
    pub async fn scan_reservations(
        &self,
        keys: &OutletKeys,
        cursor: u64,
        count: usize,
    ) -> anyhow::Result<(u64, Vec<ResRecord>)> {
        let mut conn = self.conn.clone();
        let (next, pairs): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(&keys.reservations)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .context("scanning reservations")?;
        let records = pairs
            .chunks(2)
            .filter_map(|p| p.get(1))
            .map(|json| serde_json::from_str(json).context("decoding a reservation"))
            .collect::<anyhow::Result<_>>()?;
        Ok((next, records))
    }

    /// Several reservations in one round trip; missing ones are left out.
    pub async fn reservations(
        &self,
        keys: &OutletKeys,
        ids: &[ReservationId],
    ) -> anyhow::Result<Vec<ResRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&keys.reservations)
            .arg(ids.iter().map(ReservationId::as_str).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await
            .context("reading reservations")?;
        raw.into_iter()
            .flatten()
            .map(|json| serde_json::from_str(&json).context("decoding a reservation"))
            .collect()
    }

    /// Up to `count` outbox entries after `after_seq`, and the outbox length, in one round trip.
    pub async fn read_outbox(
        &self,
        keys: &OutletKeys,
        after_seq: u64,
        count: usize,
    ) -> anyhow::Result<(Vec<OutboxEntry>, u64)> {
        let mut conn = self.conn.clone();
        let (entries, len): (Vec<RawStreamEntry>, u64) = redis::pipe()
            .cmd("XRANGE")
            .arg(&keys.outbox)
            .arg(format!("({after_seq}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .cmd("XLEN")
            .arg(&keys.outbox)
            .query_async(&mut conn)
            .await
            .context("reading an outbox")?;
        let entries = entries
            .into_iter()
            .map(|(id, fields)| {
                let seq = id
                    .split_once('-')
                    .and_then(|(seq, _)| seq.parse().ok())
                    .with_context(|| format!("outbox entry id {id}"))?;
                let json = fields
                    .into_iter()
                    .find(|(name, _)| name == "d")
                    .map(|(_, v)| v)
                    .with_context(|| format!("outbox entry {id} has no document"))?;
                Ok(OutboxEntry { seq, json })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((entries, len))
    }

    /// The seq of the oldest entry still in the outbox, if any.
    pub async fn first_outbox_seq(&self, keys: &OutletKeys) -> anyhow::Result<Option<u64>> {
        let (entries, _) = self.read_outbox(keys, 0, 1).await?;
        Ok(entries.first().map(|e| e.seq))
    }

    /// The seq at which the outlet applied the movement with this event key, if it did (and
    /// still remembers it: within `movements.retain_secs`).
    pub async fn event_seq(&self, keys: &OutletKeys, key: &str) -> anyhow::Result<Option<u64>> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&keys.events)
            .arg(key)
            .query_async(&mut conn)
            .await
            .context("reading an event record")?;
        let Some(raw) = raw else { return Ok(None) };
        let v: serde_json::Value =
            serde_json::from_str(&raw).context("decoding an event record")?;
        Ok(v["result"]["seq"].as_u64())
    }

    /// Drops outbox entries up to and including `seq` (they are durable in the ledger).
    pub async fn trim_outbox(&self, keys: &OutletKeys, seq: u64) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("XTRIM")
            .arg(&keys.outbox)
            .arg("MINID")
            .arg(format!("{seq}-1"))
            .query_async::<i64>(&mut conn)
            .await
            .context("trimming an outbox")?;
        Ok(())
    }
}

/// Every SKU's counters from the outlet's three hashes (a SKU without `reserved` or `sku_seq`
/// has 0 there).
fn join_counters(
    on_hand: BTreeMap<Sku, i64>,
    reserved: &BTreeMap<Sku, i64>,
    sku_seq: &BTreeMap<Sku, u64>,
) -> BTreeMap<Sku, Counters> {
    on_hand
        .into_iter()
        .map(|(sku, on_hand)| {
            let c = Counters {
                on_hand,
                reserved: reserved.get(&sku).copied().unwrap_or(0),
                seq: sku_seq.get(&sku).copied().unwrap_or(0),
            };
            (sku, c)
        })
        .collect()
}
