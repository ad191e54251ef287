//! What the load crate's tests share: settings of an in-process shelfsync on the real servers,
//! a broker of a test's own, the festival simulator run as a process, and the clean-up.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use shelfsync::settings::BucketSettings;
use shelfsync::{Application, Settings};

/// Settings of the repository's `config.toml` with a fresh prefix, database and port 0.
pub fn test_settings() -> Settings {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
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
    // The simulator reads with the admin key and holds with the storefront key.
    let roomy = BucketSettings {
        per_sec: 100_000.0,
        burst: 100_000,
    };
    s.rate_limits.admin = roomy;
    s.rate_limits.storefront = roomy;
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

/// Removes what the test left on the shared servers.
pub async fn cleanup(settings: &Settings) {
    if let Err(e) = shelfsync_load::scratch::cleanup(settings).await {
        eprintln!("removing the test's keys and database failed: {e:#}");
    }
}

/// A Mosquitto of the test's own (`Broker::start_with_defaults`: Mosquitto's own limits).
#[allow(unused_imports)]
pub use shelfsync_load::broker::Broker;

/// What a festival run left: its exit status and output, its JSON report and its PNG.
pub struct Run {
    pub output: Output,
    pub report: Option<Value>,
    pub png: Vec<u8>,
}

/// Runs `shelfsync-festival` against `url` (the service of `settings`) with `args`, at most
/// `TIMEOUT`; prints its output.
pub async fn festival(url: &str, settings: &Settings, args: &[&str]) -> Run {
    const TIMEOUT: Duration = Duration::from_secs(300);
    let out = std::env::temp_dir().join(format!(
        "festival-test-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    let bin = env!("CARGO_BIN_EXE_shelfsync-festival");
    let mut command = Command::new(bin);
    command
        .args(["--url", url, "--topic-prefix", &settings.mqtt.topic_prefix])
        .args(["--mqtt-port", &settings.mqtt.port.to_string()])
        .args(args)
        .arg("--out")
        .arg(&out);
    // The binary runs while this runtime keeps serving.
    let run =
        tokio::task::spawn_blocking(move || command.output().expect("running shelfsync-festival"));
    let output = tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("the run stops by itself")
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let report = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_file(&out);
    let png_path = out.with_extension("png");
    let png = std::fs::read(&png_path).unwrap_or_default();
    let _ = std::fs::remove_file(&png_path);
    Run {
        output,
        report,
        png,
    }
}

/// A catalogue beside the demo's: its outlets, SKUs and zones, and `qty` of each of the first
/// `skus` SKUs at every outlet. Points `settings` at it; returns its folder.
pub fn roomy_stock(settings: &mut Settings, skus: usize, qty: i64) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("shelfsync-stock-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ids = |file: &Path| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').next().map(str::to_owned))
            .collect()
    };
    let outlets = ids(&settings.catalogue.outlets_file);
    let skus: Vec<String> = ids(&settings.catalogue.skus_file)
        .into_iter()
        .take(skus)
        .collect();
    let mut csv = String::from("outlet,sku,qty\n");
    for o in &outlets {
        for s in &skus {
            csv.push_str(&format!("{o},{s},{qty}\n"));
        }
    }
    let file = dir.join("stock.csv");
    std::fs::write(&file, csv).unwrap();
    settings.catalogue.stock_file = file;
    dir
}

/// A shelfsync served in this process (the simulator runs as a process beside it).
pub struct Served {
    pub url: String,
    handle: shelfsync::app::AppHandle,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    /// Imports the catalogue's opening stock through the normal path, then serves.
    pub async fn start(settings: &Settings) -> Self {
        shelfsync::import::run(settings.clone(), false)
            .await
            .expect("import");
        let app = Application::build(settings.clone())
            .await
            .expect("app builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        let done = actix_web::rt::spawn(app.run_until_stopped());
        Self { url, handle, done }
    }

    /// Graceful stop, then the clean-up of what the test left on the shared servers.
    pub async fn finish(self, settings: &Settings) {
        self.handle.stop().await;
        self.done.await.expect("app task").expect("clean shutdown");
        cleanup(settings).await;
    }
}
