//! Test harness: each test gets its own Redis key prefix, MongoDB database and MQTT topic
//! prefix on the real servers, and a real shelfsync on a free port.
#![allow(dead_code)]

pub mod procs;

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use shelfsync::domain::OutletId;
use shelfsync::ledger::{Ledger, Projection};
use shelfsync::store::{RedisStore, Snapshot};
use shelfsync::{Application, Settings};

pub const ADMIN: &str = "demo-admin-key-change-me";
pub const STOREFRONT: &str = "demo-storefront-key-change-me";
pub const VIEWER: &str = "demo-viewer-key-change-me";
pub const POS_VIJAY_NAGAR: &str = "demo-pos-indore-vijay-nagar";
pub const MANAGER_INDORE: &str = "demo-manager-indore-key-change-me";

pub const OUTLET: &str = "indore-vijay-nagar";
pub const OTHER_OUTLET: &str = "indore-palasia";
pub const SKU: &str = "kaju-katli-1kg";
pub const SKU2: &str = "soan-papdi-500g";
pub const SKU3: &str = "ratlami-sev-400g";

/// Settings of `config.toml` with a fresh prefix, database and port 0.
pub fn test_settings() -> Settings {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut s = Settings::load(format!("{root}/config.toml").as_ref()).expect("config.toml");
    let id = uuid::Uuid::new_v4().simple().to_string();
    s.http.port = 0;
    s.http.workers = 2;
    s.redis.key_prefix = format!("test-{}", &id[..12]);
    s.mongo.database = format!("shelfsync_test_{}", &id[..12]);
    s.mqtt.topic_prefix = format!("test-{}/", &id[..12]);
    s.mqtt.client_id = format!("shelfsync-test-{}", &id[..12]);
    s.mqtt.reconnect_delay_max_ms = 1000;
    s.ledger.poll_interval_ms = 200;
    // A checkpoint on every pass that finds new documents, so tests see them.
    s.reconciler.checkpoint_every_docs = 1;
    for f in [
        &mut s.catalogue.outlets_file,
        &mut s.catalogue.skus_file,
        &mut s.catalogue.stock_file,
        &mut s.catalogue.zones_file,
    ] {
        *f = std::path::Path::new(root).join(&*f);
    }
    s
}

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    pub settings: Settings,
    handle: shelfsync::app::AppHandle,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    shelfsync::init_tracing();
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let done = actix_web::rt::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        url,
        http,
        settings,
        handle,
        done,
    }
}

impl TestApp {
    /// Graceful stop: requests finish, actors drain, every outbox reaches the ledger.
    pub async fn stop(self) -> Settings {
        self.handle.stop().await;
        self.done.await.expect("app task").expect("clean shutdown");
        self.settings
    }

    /// Runs a reconciler pass now.
    pub async fn reconcile(&self) -> shelfsync::actors::reconciler::PassReport {
        self.handle.reconcile().await.expect("reconciler pass")
    }

    /// Stops gracefully, then removes what the test left on the shared servers.
    pub async fn finish(self) {
        let settings = self.stop().await;
        cleanup(&settings).await;
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Response {
        self.http
            .put(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn reserve(&self, idem: &str, body: Value) -> Response {
        self.http
            .post(format!("{}/v1/reservations", self.url))
            .bearer_auth(STOREFRONT)
            .header("Idempotency-Key", idem)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Holds `qty` of `sku` at `outlet`; panics unless 201. Returns the reservation.
    pub async fn hold(&self, outlet: &str, sku: &str, qty: i64, ttl_secs: i64) -> Value {
        let idem = uuid::Uuid::new_v4().to_string();
        let body =
            json!({"outlet": outlet, "lines": [{"sku": sku, "qty": qty}], "ttl_secs": ttl_secs});
        let res = self.reserve(&idem, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    pub async fn movement(&self, key: &str, body: Value) -> Response {
        self.post("/v1/movements", key, body).await
    }

    /// Sets on_hand by a `count` movement (admin) and waits for its durable answer.
    pub async fn set_stock(&self, outlet: &str, sku: &str, qty: i64) -> Value {
        let body = json!({"event_id": format!("count-{}", uuid::Uuid::new_v4().simple()), "outlet": outlet,
            "sku": sku, "kind": "count", "qty": qty, "at": "2026-11-21T09:00:00Z"});
        let res = self.movement(ADMIN, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    pub async fn stock(&self, outlet: &str, sku: &str) -> Value {
        let res = self
            .get(&format!("/v1/outlets/{outlet}/stock/{sku}"), VIEWER)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    pub async fn reservation(&self, id: &str) -> Value {
        let res = self
            .get(&format!("/v1/reservations/{id}"), STOREFRONT)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }
}

pub async fn redis_store(settings: &Settings) -> RedisStore {
    RedisStore::connect(&settings.redis).await.unwrap()
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

/// The outlet as its MongoDB ledger explains it.
pub async fn ledger_projection(settings: &Settings, outlet: &str) -> Projection {
    let ledger = Ledger::connect(&settings.mongo).await.unwrap();
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
    let client = redis::Client::open(settings.redis.url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", settings.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Removes what a test left on the shared servers.
pub async fn cleanup(settings: &Settings) {
    wipe_redis(settings).await;
    let client = mongodb::Client::with_uri_str(settings.mongo.uri.expose())
        .await
        .unwrap();
    let _ = client.database(&settings.mongo.database).drop().await;
}

/// Polls `check` every 50 ms until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The value of one sample of the service's `/metrics`, named with its labels in any order
/// (`shelfsync_mqtt_acks_total{outcome="sent"}`); 0 when it is not exposed (yet).
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    // "name{a="x",b="y"}" -> (name, sorted labels)
    fn key(series: &str) -> (String, Vec<String>) {
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let mut labels: Vec<String> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        labels.sort();
        (name.to_owned(), labels)
    }
    let wanted = key(series);
    let text = app.get("/metrics", VIEWER).await.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (s, value) = l.rsplit_once(' ')?;
            (key(s) == wanted).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// A Mosquitto of the test's own on a free port (for outages), killed when dropped.
pub struct TestBroker {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl TestBroker {
    /// Room for a long offline queue; no persistence, so a restart comes back empty.
    pub async fn start() -> Self {
        Self::start_with("max_queued_messages 100000\nmax_inflight_messages 100\n").await
    }

    /// Mosquitto's own limits (20 messages in flight from each client, 1000 queued per
    /// client), as a broker nobody configured has.
    pub async fn start_with_defaults() -> Self {
        Self::start_with("").await
    }

    async fn start_with(settings: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("shelfsync-broker-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\n{settings}");
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.restart().await;
        broker
    }

    /// Starts the broker (again) on the same port, empty.
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto is installed (make test installs it)");
        self.child = Some(child);
        let port = self.port;
        assert!(
            eventually(10, || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await
        );
    }

    /// kill -9: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A message a test client received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Value,
    pub retain: bool,
}

/// An MQTT 5 test client: publishes QoS 1 and collects what it is subscribed to.
pub struct MqttClient {
    pub client: rumqttc::v5::AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    seen: Vec<Received>,
}

impl MqttClient {
    pub async fn connect(port: u16) -> Self {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let id = format!("test-client-{}", uuid::Uuid::new_v4().simple());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&p.payload).into_owned())
                        });
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if tx
                            .send(Received {
                                topic,
                                payload,
                                retain: p.retain,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("test client connects")
            .unwrap();
        Self {
            client,
            rx,
            seen: Vec::new(),
        }
    }

    pub async fn subscribe(&self, topic: &str) {
        use rumqttc::v5::mqttbytes::QoS;
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        use rumqttc::v5::mqttbytes::QoS;
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    /// Waits until a received message satisfies `pred`, up to `secs`.
    pub async fn wait_for(
        &mut self,
        secs: u64,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(found) = self.seen.iter().find(|r| pred(r)) {
                return Some(found.clone());
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(r)) => self.seen.push(r),
                _ => return None,
            }
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: Value,
}

/// A live SSE client collecting events in the background.
pub struct SseClient {
    rx: tokio::sync::mpsc::UnboundedReceiver<Sse>,
}

impl SseClient {
    /// Connects to `/v1/stream?{query}` with `key` and waits for the response head.
    pub async fn connect(app: &TestApp, query: &str, key: &str) -> Result<Self, StatusCode> {
        use futures_util::StreamExt;
        let res = app
            .http
            .get(format!("{}/v1/stream?{query}", app.url))
            .bearer_auth(key)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        if res.status() != StatusCode::OK {
            return Err(res.status());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = res.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let mut event = String::new();
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            event = v.to_owned();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push_str(v);
                        }
                    }
                    if event.is_empty() {
                        continue; // a comment (keep-alive)
                    }
                    let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if tx.send(Sse { event, data }).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self { rx })
    }

    /// The next event, waiting at most `secs`.
    pub async fn next(&mut self, secs: u64) -> Option<Sse> {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

/// The first `n` SKUs of the demo catalogue.
pub fn catalogue_skus(n: usize) -> Vec<String> {
    let path = format!("{}/catalogue/skus.csv", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .take(n)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect()
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Runs the `shelfsync` binary against the settings' Redis prefix and MongoDB database.
pub fn cli(settings: &Settings, args: &[&str]) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    std::process::Command::new(env!("CARGO_BIN_EXE_shelfsync"))
        .args(args)
        .current_dir(root)
        .env("SHELFSYNC_CONFIG", format!("{root}/config.toml"))
        .env("SHELFSYNC__REDIS__URL", settings.redis.url.expose())
        .env("SHELFSYNC__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
        .env("SHELFSYNC__MONGO__URI", settings.mongo.uri.expose())
        .env("SHELFSYNC__MONGO__DATABASE", &settings.mongo.database)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running shelfsync")
}
