//! What a test or a load run leaves on the shared servers (its Redis key prefix, its MongoDB
//! database), and its removal.

use shelfsync::Settings;

/// Deletes every Redis key under the settings' prefix (also: a Redis that restarted empty).
/// On a Redis Cluster (`redis.url` lists every master) each node's keys, one by one: a DEL
/// of keys in several slots is refused there.
pub async fn wipe_redis(settings: &Settings) -> anyhow::Result<()> {
    for url in settings.redis.url.expose().split(',').map(str::trim) {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", settings.redis.key_prefix))
            .query_async(&mut conn)
            .await?;
        if settings.redis.cluster {
            for key in &keys {
                let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
            }
        } else if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
        }
    }
    Ok(())
}

/// Removes the settings' Redis keys and drops their MongoDB database.
pub async fn cleanup(settings: &Settings) -> anyhow::Result<()> {
    wipe_redis(settings).await?;
    let client = mongodb::Client::with_uri_str(settings.mongo.uri.expose()).await?;
    client.database(&settings.mongo.database).drop().await?;
    Ok(())
}
