//! What a test or a load run leaves on the shared servers (its Redis key prefix, its MongoDB
//! database), and its removal.

use shelfsync::Settings;

/// Deletes every Redis key under the settings' prefix (also: a Redis that restarted empty).
pub async fn wipe_redis(settings: &Settings) -> anyhow::Result<()> {
    let client = redis::Client::open(settings.redis.url.expose())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", settings.redis.key_prefix))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
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
