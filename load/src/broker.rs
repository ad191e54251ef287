//! A Mosquitto of a test's (or a load run's) own on a free port, killed when dropped: for
//! outages (kill, restart empty) and for Mosquitto's own limits.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a started broker has to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Broker {
    /// The address it listens on (loopback, or a test link's).
    pub host: String,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
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
        Self::start_on("127.0.0.1", settings).await
    }

    /// A broker with a long offline queue listening on `host` only (a test link's address on
    /// this side, which clients in the link's namespace reach over the link).
    pub async fn start_on_host(host: &str) -> Self {
        Self::start_on(
            host,
            "max_queued_messages 100000\nmax_inflight_messages 100\n",
        )
        .await
    }

    async fn start_on(host: &str, settings: &str) -> Self {
        let port = std::net::TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("shelfsync-broker-{host}-{port}"));
        std::fs::create_dir_all(&dir).expect("the broker's directory");
        let conf = format!("listener {port} {host}\nallow_anonymous true\n{settings}");
        std::fs::write(dir.join("mosquitto.conf"), conf).expect("the broker's configuration");
        let mut broker = Self {
            host: host.to_owned(),
            port,
            dir,
            child: None,
        };
        broker.restart().await;
        broker
    }

    /// Starts the broker (again) on the same port, empty.
    pub async fn restart(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (make test installs it)");
        self.child = Some(child);
        let until = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < until,
                "mosquitto did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
