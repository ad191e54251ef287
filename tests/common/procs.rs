//! Server processes of a test's own (SecantusDB, Redis, Mosquitto, shelfsync itself), for
//! faults: stopped, paused, killed and restarted on the same port.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{eventually, free_port};

pub async fn wait_port(port: u16, secs: u64) {
    assert!(
        eventually(secs, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await,
        "nothing listens on {port}"
    );
}

/// A server process of the test's own; `stop` sends SIGTERM, `kill` SIGKILL.
pub struct Proc {
    name: &'static str,
    pub port: u16,
    command: Box<dyn Fn() -> Command + Send>,
    child: Option<Child>,
    /// Where its output goes (appended across restarts); none: nowhere.
    log: Option<std::path::PathBuf>,
}

impl Proc {
    pub async fn start(
        name: &'static str,
        port: u16,
        command: impl Fn() -> Command + Send + 'static,
    ) -> Self {
        Self::start_logged(name, port, None, command).await
    }

    /// `start`, with the process's output appended to `log` (a fresh file), which
    /// `log_tail` reads back when a test fails.
    pub async fn start_logged(
        name: &'static str,
        port: u16,
        log: Option<std::path::PathBuf>,
        command: impl Fn() -> Command + Send + 'static,
    ) -> Self {
        if let Some(log) = &log {
            let _ = std::fs::remove_file(log);
        }
        let mut p = Self {
            name,
            port,
            command: Box::new(command),
            child: None,
            log,
        };
        p.spawn().await;
        p
    }

    /// The last `lines` lines of the process's log (empty when it has none).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = (self.log.as_ref())
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn output(&self) -> (Stdio, Stdio) {
        let file = (self.log.as_ref()).and_then(|l| {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(l);
            f.ok()
        });
        match file.and_then(|f| Some((f.try_clone().ok()?, f))) {
            Some((out, err)) => (out.into(), err.into()),
            None => (Stdio::null(), Stdio::null()),
        }
    }

    pub async fn spawn(&mut self) {
        let (stdout, stderr) = self.output();
        let child = (self.command)()
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
        wait_port(self.port, 60).await;
    }

    pub fn signal(&mut self, sig: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self, sig: &str) {
        self.signal(sig);
        self.spawn().await;
    }

    /// SIGTERM without waiting for the process to exit (see `exited`).
    pub fn term(&self) {
        self.send("-TERM");
    }

    /// Whether the process has exited (it is reaped then).
    pub fn exited(&mut self) -> bool {
        let done = (self.child.as_mut()).is_none_or(|c| c.try_wait().ok().flatten().is_some());
        if done {
            self.child = None;
        }
        done
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing until `resume`.
    pub fn pause(&self) {
        self.send("-STOP");
    }

    /// SIGKILL without waiting (for a process others still hold a reference to); the
    /// child is reaped when the value drops.
    pub fn kill(&self) {
        self.send("-KILL");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.send("-CONT");
    }

    fn send(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A paused process takes SIGKILL as it is.
        self.signal("-KILL");
    }
}

/// A Redis of the test's own on a free port, keeping nothing on disk.
pub async fn start_redis() -> Proc {
    let port = free_port();
    Proc::start("redis-server", port, move || {
        let mut c = Command::new("redis-server");
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        c
    })
    .await
}

/// The URL of a Redis of the test's own, for `settings.redis.url`.
pub fn redis_url(redis: &Proc) -> shelfsync::settings::Secret {
    shelfsync::settings::Secret::new(format!("redis://127.0.0.1:{}", redis.port))
}

/// The URI of a SecantusDB of the test's own, for `settings.mongo.uri`.
pub fn mongo_uri(mongo: &Proc) -> shelfsync::settings::Secret {
    shelfsync::settings::Secret::new(format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        mongo.port
    ))
}

/// A SecantusDB of the test's own, with its data in `dir/mongo`.
pub async fn start_mongo(dir: &Path) -> Proc {
    let port = free_port();
    let secantus = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/secantusd-py");
    let data = dir.join("mongo");
    std::fs::create_dir_all(&data).unwrap();
    Proc::start("secantusd-py", port, move || {
        let mut c = Command::new(&secantus);
        // As scripts/services.sh starts it (see there).
        c.arg("--port")
            .arg(port.to_string())
            .arg("--storage-path")
            .arg(&data)
            .arg("--standalone");
        c
    })
    .await
}

/// A real Redis Cluster of three masters (no replicas) on free ports, its nodes' files in a
/// directory of its own; the processes end, and the directory goes, with the value.
pub struct RedisCluster {
    pub nodes: Vec<Proc>,
    dir: std::path::PathBuf,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.signal("-KILL");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "shelfsync-redis-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let data = dir.clone();
        std::fs::create_dir_all(&data).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let (port, data) = (cluster_port(), data.clone());
            nodes.push(
                Proc::start("redis-server", port, move || {
                    let mut c = Command::new("redis-server");
                    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                        .arg("--cluster-config-file")
                        .arg(data.join(format!("nodes-{port}.conf")))
                        .arg("--dir")
                        .arg(&data)
                        .args(["--save", "", "--appendonly", "no"]);
                    c
                })
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("timeout")
            .arg("60")
            .arg("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {created:?}"
        );
        let cluster = Self { nodes, dir };
        for n in &cluster.nodes {
            let port = n.port;
            let ok = eventually(30, || async move {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
            })
            .await;
            assert!(ok, "the cluster node on {port} is not ok");
        }
        cluster
    }

    /// The seed URLs, as `redis.url` takes them with `redis.cluster = true`.
    pub fn url(&self) -> shelfsync::settings::Secret {
        let urls: Vec<String> = (self.nodes.iter())
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect();
        shelfsync::settings::Secret::new(urls.join(","))
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// `shelfsync serve` as a process of the test's own on `port`: config.toml with the
/// settings' stores, broker, topic prefix, node id and MQTT client id; add more with `.env`.
pub fn serve_command(s: &shelfsync::Settings, port: u16) -> Command {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut c = Command::new(env!("CARGO_BIN_EXE_shelfsync"));
    c.arg("serve")
        .current_dir(root)
        .env("SHELFSYNC_CONFIG", format!("{root}/config.toml"))
        .env("SHELFSYNC__HTTP__PORT", port.to_string())
        .env("SHELFSYNC__REDIS__URL", s.redis.url.expose())
        .env("SHELFSYNC__REDIS__KEY_PREFIX", &s.redis.key_prefix)
        .env("SHELFSYNC__REDIS__CLUSTER", s.redis.cluster.to_string())
        .env("SHELFSYNC__MONGO__URI", s.mongo.uri.expose())
        .env("SHELFSYNC__MONGO__DATABASE", &s.mongo.database)
        .env("SHELFSYNC__MQTT__PORT", s.mqtt.port.to_string())
        .env("SHELFSYNC__MQTT__CLIENT_ID", &s.mqtt.client_id)
        .env("SHELFSYNC__MQTT__TOPIC_PREFIX", &s.mqtt.topic_prefix)
        .env("SHELFSYNC__CLUSTER__NODE_ID", &s.cluster.node_id)
        .env("RUST_LOG", "warn");
    c
}
