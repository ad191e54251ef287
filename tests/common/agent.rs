//! The outlet agent (`shelfsync-agent`) as a process of the test's own, on this side or
//! inside a test link's namespace, with its store in a directory of its own (removed with
//! the value), and a till that posts sale vouchers to it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// The agent binary beside this test binary (`make test` builds every binary first; `cargo
/// test` builds only this package's).
pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/release/deps/agent-… -> target/release/shelfsync-agent
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("shelfsync-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it first (make test does; or cargo build --release -p shelfsync-agent)",
        bin.display()
    );
    bin
}

/// How an agent is set up; `env` turns it into `SHELFSYNC_AGENT__…` variables.
#[derive(Clone)]
pub struct AgentConfig {
    pub outlet: String,
    pub port: u16,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub topic_prefix: String,
    /// `mqtt` or `http`.
    pub via: &'static str,
    pub shelfsync_url: String,
    pub api_key: String,
    /// Any other key, as `("STORE__PENDING_MAX", "3")`.
    pub extra: Vec<(String, String)>,
}

impl AgentConfig {
    /// An agent of `app`'s outlet `OUTLET` on its broker and topic prefix, over MQTT.
    pub fn for_app(app: &super::TestApp) -> Self {
        let m = &app.settings.mqtt;
        Self {
            outlet: super::OUTLET.into(),
            port: super::free_port(),
            mqtt_host: m.host.clone(),
            mqtt_port: m.port,
            topic_prefix: m.topic_prefix.clone(),
            via: "mqtt",
            shelfsync_url: app.url.clone(),
            api_key: super::POS_VIJAY_NAGAR.into(),
            extra: Vec::new(),
        }
    }

    /// An agent of `OUTLET` on a broker at `mqtt_port` with a topic prefix of its own and no
    /// shelfsync behind it.
    pub fn standalone(mqtt_port: u16) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            outlet: super::OUTLET.into(),
            port: super::free_port(),
            mqtt_host: "127.0.0.1".into(),
            mqtt_port,
            topic_prefix: format!("test-{}/", &id[..12]),
            via: "mqtt",
            shelfsync_url: "http://127.0.0.1:9".into(),
            api_key: super::POS_VIJAY_NAGAR.into(),
            extra: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.extra.push((key.into(), value.to_string()));
        self
    }

    fn env(&self, dir: &std::path::Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("OUTLET", self.outlet.clone()),
            ("DATA_DIR", dir.display().to_string()),
            ("HTTP__HOST", "127.0.0.1".into()),
            ("HTTP__PORT", self.port.to_string()),
            ("MQTT__HOST", self.mqtt_host.clone()),
            ("MQTT__PORT", self.mqtt_port.to_string()),
            ("MQTT__TOPIC_PREFIX", self.topic_prefix.clone()),
            // One broker session per agent directory, as one per outlet in a shop.
            (
                "MQTT__CLIENT_ID",
                format!("agent-{}", dir.file_name().unwrap().to_string_lossy()),
            ),
            ("FORWARD__VIA", self.via.into()),
            ("SHELFSYNC__URL", self.shelfsync_url.clone()),
            ("SHELFSYNC__API_KEY", self.api_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(self.extra.iter().cloned());
        env.into_iter()
            .map(|(k, v)| (format!("SHELFSYNC_AGENT__{k}"), v))
            .collect()
    }
}

/// A running agent; killed (SIGKILL) and its directory removed when dropped.
pub struct AgentProc {
    pub config: AgentConfig,
    pub dir: PathBuf,
    /// `ip netns exec NS` in front of the agent, for one inside a test link.
    netns: Option<String>,
    child: Option<Child>,
}

impl AgentProc {
    pub fn new(config: AgentConfig, netns: Option<String>) -> Self {
        let dir =
            std::env::temp_dir().join(format!("shelfsync-agent-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            config,
            dir,
            netns,
            child: None,
        }
    }

    /// Starts the agent (again, on the same store); returns once it has its store open and
    /// takes webhooks (`/healthz` from a till on its side answers), up to 30 s.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(agent_bin());
                c
            }
            None => Command::new(agent_bin()),
        };
        c.current_dir(&self.dir)
            .envs(self.config.env(&self.dir))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.child = Some(c.spawn().expect("starting shelfsync-agent"));
        let port = self.config.port;
        let netns = self.netns.clone();
        let up = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if healthz(netns.as_deref(), port) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
        .join()
        .unwrap();
        assert!(up, "the agent did not start: {}", self.log());
    }

    /// kill -9: no goodbye, no flush beyond what was committed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The agent's base URL, as a till on its side reaches it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.port)
    }
}

/// Whether an agent answers `/healthz` on `port`, from this side or inside `netns`.
fn healthz(netns: Option<&str>, port: u16) -> bool {
    use std::io::{Read, Write};
    let probe = move || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    };
    match netns {
        None => probe(),
        Some(ns) => {
            let path = format!("/run/netns/{ns}");
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        super::netns::enter(&path);
                        probe()
                    })
                    .join()
                    .unwrap()
            })
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("agent log ({}):\n{}", self.dir.display(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A voucher the agent recorded.
#[derive(Debug, Clone)]
pub struct Voucher {
    /// Its lines' event ids, in line order.
    pub events: Vec<String>,
    /// Its lines, (sku, qty).
    pub lines: Vec<(String, i64)>,
    /// When the till was first answered `202` for it.
    pub at: std::time::Instant,
}

/// A till: posts sale vouchers to an agent and sends each again until it is answered `202`,
/// as a billing system's webhook queue does. Keeps what each voucher became.
pub struct Till {
    pub http: reqwest::Client,
    pub url: String,
    /// What each voucher answered `202` became.
    pub recorded: HashMap<String, Voucher>,
    /// Posts that got no answer or a 5xx, sent again.
    pub retries: u64,
    /// Vouchers answered `202` as a duplicate after such a retry: recorded by an agent that
    /// died before its answer went out.
    pub duplicates: u64,
    /// How long each post answered `202` took.
    pub answered_in: Vec<Duration>,
}

impl Till {
    pub fn new(url: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            url,
            recorded: HashMap::new(),
            retries: 0,
            duplicates: 0,
            answered_in: Vec::new(),
        }
    }

    /// The voucher's body: `lines` of (sku, qty), dated now-ish (`recent_at`).
    pub fn voucher(voucher: &str, lines: &[(&str, i64)]) -> Value {
        let lines: Vec<Value> = (lines.iter())
            .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
            .collect();
        json!({"voucher": voucher, "at": super::recent_at(), "lines": lines})
    }

    /// One post: its status and body, or None without an answer.
    pub async fn post(&self, body: &Value) -> Option<(u16, Value)> {
        let res = (self.http.post(format!("{}/v1/sales", self.url)))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        Some((status, res.json().await.unwrap_or(Value::Null)))
    }

    /// Posts until answered 202 (at most `secs`); panics on a 4xx, which a retry cannot mend.
    pub async fn sell(&mut self, voucher: &str, lines: &[(&str, i64)], secs: u64) {
        let body = Self::voucher(voucher, lines);
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let sent = std::time::Instant::now();
            match self.post(&body).await {
                Some((202, answer)) => {
                    self.answered_in.push(sent.elapsed());
                    if answer["duplicate"] == true && !self.recorded.contains_key(voucher) {
                        self.duplicates += 1;
                    }
                    let events = (answer["events"].as_array().expect("event ids").iter())
                        .map(|e| e.as_str().unwrap().to_owned())
                        .collect();
                    let lines = (lines.iter()).map(|(s, q)| (s.to_string(), *q)).collect();
                    self.recorded.entry(voucher.to_owned()).or_insert(Voucher {
                        events,
                        lines,
                        at: std::time::Instant::now(),
                    });
                    return;
                }
                Some((status, answer)) if status < 500 => {
                    panic!("voucher {voucher}: {status} {answer}")
                }
                _ => {
                    self.retries += 1;
                    assert!(
                        std::time::Instant::now() < deadline,
                        "voucher {voucher} not recorded within {secs} s"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The agent's status page.
    pub async fn status(&self) -> Option<Value> {
        let res = (self.http.get(format!("{}/status", self.url)))
            .send()
            .await
            .ok()?;
        res.json().await.ok()
    }

    /// One sample of the agent's `/metrics` (see `sample`).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = (self.http.get(format!("{}/metrics", self.url)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        super::sample(&text, series)
    }

    /// The agent's local read of a SKU's stock.
    pub async fn stock(&self, sku: &str) -> Value {
        (self.http.get(format!("{}/v1/stock/{sku}", self.url)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (at most `secs`) until the till reads shelfsync's own `on_hand` of `sku` from the
    /// agent: no sale of its own left out of it, the link live.
    pub async fn reads_settled(&self, sku: &str, on_hand: i64, secs: u64) {
        let settled = super::eventually(secs, || async {
            let s = self.stock(sku).await;
            s["on_hand"] == on_hand && s["local_delta"] == 0 && s["stale"] == false
        })
        .await;
        assert!(settled, "the till reads {}", self.stock(sku).await);
    }

    /// Waits until the agent has nothing pending (at most `secs`); whether it came to that.
    pub async fn drained(&self, secs: u64) -> bool {
        super::eventually(secs, || async {
            self.status()
                .await
                .is_some_and(|s| s["pending"]["events"] == 0)
        })
        .await
    }
}

impl Till {
    /// Each line of the vouchers this till recorded is in the ledger of `OUTLET` once, and no
    /// other event the agent makes (`v` + 32 hex + `-` + line) is; returns the units sold per
    /// SKU.
    pub async fn each_line_once(&self, app: &super::TestApp) -> HashMap<String, i64> {
        let counts = ledger_event_counts(&app.settings, super::OUTLET).await;
        let mut ours = std::collections::HashSet::new();
        let mut sold = HashMap::new();
        for (voucher, v) in &self.recorded {
            for (id, (sku, qty)) in v.events.iter().zip(&v.lines) {
                assert_eq!(counts.get(id), Some(&1), "voucher {voucher}'s line {id}");
                ours.insert(id.clone());
                *sold.entry(sku.clone()).or_default() += qty;
            }
        }
        let strays: Vec<_> = (counts.keys())
            .filter(|id| id.starts_with('v') && id.len() > 33 && !ours.contains(*id))
            .collect();
        assert!(strays.is_empty(), "events no voucher made: {strays:?}");
        sold
    }
}

/// How often each event id is in the outlet's ledger, by the test's own MongoDB client.
pub async fn ledger_event_counts(
    settings: &shelfsync::Settings,
    outlet: &str,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in super::documents(settings, "ledger").await {
        if d.get_str("outlet").ok() != Some(outlet) {
            continue;
        }
        if let Ok(id) = d.get_str("event_id") {
            *counts.entry(id.to_owned()).or_default() += 1;
        }
    }
    counts
}
