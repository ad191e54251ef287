//! Brokers of a test's own and an MQTT 5 test client (on the shared harness of
//! `shelfsync_load::mqtt`).

use std::time::Duration;

use serde_json::Value;

/// A Mosquitto of the test's own on a free port (for outages), killed when dropped.
#[allow(unused_imports)]
pub use shelfsync_load::broker::Broker as TestBroker;

/// Whether the service's MQTT session gets connected (and subscribed) within 10 s, by its
/// `/readyz`: a POS message published before it is not delivered to it.
pub async fn mqtt_ready(app: &super::TestApp) -> bool {
    super::eventually(10, || async {
        let body: Value = app
            .http
            .get(format!("{}/readyz", app.url))
            .bearer_auth(super::ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["mqtt"] == "ok"
    })
    .await
}

/// A message a test client received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Value,
    pub retain: bool,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// An MQTT 5 test client: publishes QoS 1 and collects what it is subscribed to.
pub struct MqttClient {
    pub client: shelfsync_load::mqtt::Client,
    /// PUBACKs the broker sent: QoS 1 publishes it took.
    pub acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    seen: Vec<Received>,
}

impl MqttClient {
    pub async fn connect(port: u16) -> Self {
        Self::connect_to("127.0.0.1", port).await
    }

    /// Connects to a broker listening on `host` (a test link's address).
    pub async fn connect_to(host: &str, port: u16) -> Self {
        let id = format!("test-client-{}", uuid::Uuid::new_v4().simple());
        Self::connect_with(shelfsync_load::mqtt::options(id, host, port)).await
    }

    /// Connects as a broker user (a broker with a password file).
    pub async fn connect_as(port: u16, user: &str, password: &str) -> Self {
        let id = format!("test-client-{}", uuid::Uuid::new_v4().simple());
        let mut options = shelfsync_load::mqtt::options(id, "127.0.0.1", port);
        options.set_credentials(user, password);
        Self::connect_with(options).await
    }

    async fn connect_with(options: rumqttc::v5::MqttOptions) -> Self {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::Event;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = acked.clone();
        let client = shelfsync_load::mqtt::connect(options, 10_000, move |event| {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Event::Incoming(Packet::Publish(p)) = event {
                let payload = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&p.payload).into_owned())
                });
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let _ = tx.send(Received {
                    topic,
                    payload,
                    retain: p.retain,
                    at: std::time::Instant::now(),
                });
            }
        })
        .await
        .expect("test client connects");
        Self {
            client,
            acked,
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

    /// Takes what arrived so far into `seen` (without waiting) and returns all of it.
    pub fn drain(&mut self) -> &[Received] {
        while let Ok(r) = self.rx.try_recv() {
            self.seen.push(r);
        }
        &self.seen
    }

    /// Waits until `n` received messages satisfy `pred`, up to `secs`; whether they did.
    pub async fn wait_for_n(
        &mut self,
        secs: u64,
        n: usize,
        pred: impl Fn(&Received) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.seen.iter().filter(|r| pred(r)).count() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(r)) => self.seen.push(r),
                _ => return false,
            }
        }
        true
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

/// A Mosquitto of the test's own with the shipped ACL (`deploy/mosquitto-acl.example`), a
/// password for each of `users` (shelfsync's is `shelfsync-pw`), no anonymous clients,
/// and `extra` lines of configuration; the broker, the directory of its files, and settings
/// for a shelfsync that logs in as `shelfsync-1` (the production environment's first
/// process) with no topic prefix (the ACL's topics).
pub async fn acl_broker(
    users: &[(&str, &str)],
    extra: &str,
) -> (super::procs::Proc, std::path::PathBuf, shelfsync::Settings) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("shelfsync-acl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwords");
    let all = [("shelfsync-1", "shelfsync-pw")]
        .into_iter()
        .chain(users.iter().copied());
    for (i, (user, password)) in all.enumerate() {
        let mut c = std::process::Command::new("mosquitto_passwd");
        if i == 0 {
            c.arg("-c");
        }
        let made = c.arg("-b").arg(&passwords).args([user, password]).status();
        assert!(made.unwrap().success(), "mosquitto_passwd");
    }
    let port = super::free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {root}/deploy/mosquitto-acl.example\nuse_username_as_clientid true\n{extra}",
            passwords.display()
        ),
    )
    .unwrap();
    let broker = super::procs::Proc::start("mosquitto", port, move || {
        let mut c = std::process::Command::new("mosquitto");
        c.arg("-c").arg(&conf);
        c
    })
    .await;
    let mut settings = super::test_settings();
    settings.mqtt.port = port;
    settings.mqtt.topic_prefix = String::new();
    settings.mqtt.username = Some("shelfsync-1".into());
    settings.mqtt.password = Some(shelfsync::settings::Secret::new("shelfsync-pw"));
    (broker, dir, settings)
}
