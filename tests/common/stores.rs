//! Peeks into the real Redis and MongoDB, and the clean-up of what a test leaves there.

use redis::aio::MultiplexedConnection;
use shelfsync::domain::OutletId;
use shelfsync::keys::OutletKeys;
use shelfsync::ledger::{Ledger, Projection};
use shelfsync::store::{RedisStore, Snapshot};
use shelfsync::Settings;

pub async fn redis_store(settings: &Settings) -> RedisStore {
    RedisStore::connect(&settings.redis).await.unwrap()
}

/// The outlet's keys (keys.rs) and a connection of the test's own, to look behind
/// shelfsync's back.
async fn outlet_keys(settings: &Settings, outlet: &str) -> (OutletKeys, MultiplexedConnection) {
    let store = redis_store(settings).await;
    let keys = store.keys(&OutletId::parse("outlet", outlet).unwrap());
    let client = redis::Client::open(settings.redis.url.expose()).unwrap();
    (
        keys,
        client.get_multiplexed_async_connection().await.unwrap(),
    )
}

/// Adds `by` to the outlet's on_hand of `sku` behind shelfsync's back.
pub async fn tamper(settings: &Settings, outlet: &str, sku: &str, by: i64) {
    let (keys, mut conn) = outlet_keys(settings, outlet).await;
    let _: i64 = redis::cmd("HINCRBY")
        .arg(&keys.on_hand)
        .arg(sku)
        .arg(by)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Sets one field of one of the outlet's hashes (`which` picks it) behind shelfsync's back.
pub async fn tamper_field(
    settings: &Settings,
    outlet: &str,
    which: fn(&OutletKeys) -> &str,
    field: &str,
    value: &str,
) {
    let (keys, mut conn) = outlet_keys(settings, outlet).await;
    let _: i64 = redis::cmd("HSET")
        .arg(which(&keys))
        .arg(field)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// One of the outlet's hashes (`which` picks it) as Redis has it, each value as JSON.
pub async fn redis_hash(
    settings: &Settings,
    outlet: &str,
    which: fn(&OutletKeys) -> &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let (keys, mut conn) = outlet_keys(settings, outlet).await;
    let raw: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(which(&keys))
        .query_async(&mut conn)
        .await
        .unwrap();
    (raw.into_iter())
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap()))
        .collect()
}

/// The outlet's live state, read straight from Redis.
pub async fn redis_snapshot(settings: &Settings, outlet: &str) -> Snapshot {
    let store = redis_store(settings).await;
    let outlet = OutletId::parse("outlet", outlet).unwrap();
    store
        .snapshot(&store.keys(&outlet))
        .await
        .unwrap()
        .unwrap_or_default()
}

/// The settings' ledger, connected.
pub async fn ledger(settings: &Settings) -> Ledger {
    Ledger::connect(&settings.mongo)
        .await
        .expect("the test's ledger connects")
}

/// The outlet as its MongoDB ledger explains it.
pub async fn ledger_projection(settings: &Settings, outlet: &str) -> Projection {
    let ledger = ledger(settings).await;
    let mut p = Projection::default();
    ledger
        .fold(
            &OutletId::parse("outlet", outlet).unwrap(),
            &mut p,
            None,
            |_| {},
        )
        .await
        .unwrap();
    p
}

/// Deletes every Redis key under the settings' prefix (a Redis that restarted empty).
pub async fn wipe_redis(settings: &Settings) {
    shelfsync_load::scratch::wipe_redis(settings)
        .await
        .expect("wiping the test's Redis keys");
}

/// Removes what a test left on the shared servers.
pub async fn cleanup(settings: &Settings) {
    if let Err(e) = shelfsync_load::scratch::cleanup(settings).await {
        eprintln!("removing the test's keys and database failed: {e:#}");
    }
}

/// The settings' MongoDB database, opened by a client of the test's own.
pub async fn database(settings: &Settings) -> mongodb::Database {
    mongodb::Client::with_uri_str(settings.mongo.uri.expose())
        .await
        .unwrap()
        .database(&settings.mongo.database)
}

/// Every document of a collection in the settings' MongoDB database.
pub async fn documents(settings: &Settings, collection: &str) -> Vec<mongodb::bson::Document> {
    use futures_util::TryStreamExt;
    database(settings)
        .await
        .collection::<mongodb::bson::Document>(collection)
        .find(mongodb::bson::doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}
