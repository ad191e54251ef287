//! The simulator's command line.

use clap::Parser;

#[derive(Parser, Clone)]
#[command(about = "Festival day simulator: open-loop mixed load, then an audit")]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Storefront key (holds, confirms, cancels).
    #[arg(long, default_value = "demo-storefront-key-change-me")]
    pub key: String,
    /// Admin key (discovery, metrics, ledger reads for the audit).
    #[arg(long, default_value = "demo-admin-key-change-me")]
    pub admin_key: String,
    /// The service's `whatsapp.app_secret`.
    #[arg(long, default_value = "demo-app-secret-change-me")]
    pub app_secret: String,
    /// Web holds per second on a normal day...
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// ...times this on the festival day.
    #[arg(long, default_value_t = 6.0)]
    pub spike: f64,
    /// POS counter sales per second (over MQTT).
    #[arg(long, default_value_t = 10.0)]
    pub pos_rate: f64,
    /// WhatsApp orders per second (through the webhook).
    #[arg(long, default_value_t = 2.0)]
    pub whatsapp_rate: f64,
    /// Kitchen deliveries per second (`receipt` movements over HTTP, admin key).
    #[arg(long, default_value_t = 2.0)]
    pub movement_rate: f64,
    /// Storefront customers browsing over SSE (each streams one outlet's stock).
    #[arg(long, default_value_t = 200)]
    pub sse_clients: usize,
    /// Length of the load phase.
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    /// SKUs with stock used per outlet.
    #[arg(long, default_value_t = 20)]
    pub skus: usize,
    /// Share of holds made by delivery PIN (the rest by outlet).
    #[arg(long, default_value_t = 0.3)]
    pub pin_share: f64,
    /// Share of holds confirmed after the think time...
    #[arg(long, default_value_t = 0.6)]
    pub confirm_share: f64,
    /// ...and cancelled; the rest are left to expire.
    #[arg(long, default_value_t = 0.2)]
    pub cancel_share: f64,
    /// Mean think time between a hold's answer and its confirm or cancel.
    #[arg(long, default_value_t = 500)]
    pub think_ms: u64,
    /// Hold time of the holds left to expire (they expire within the run).
    #[arg(long, default_value_t = 5)]
    pub abandon_ttl_secs: u64,
    /// Hold time of the holds that are confirmed or cancelled.
    #[arg(long, default_value_t = 60)]
    pub ttl_secs: u64,
    /// Kitchen deliveries come in lots: a share of them (`--short-lot-share`) expires this
    /// many seconds after delivery, within the run, the rest two days after; 0 sends loose
    /// units (no lot).
    #[arg(long, default_value_t = 8)]
    pub lot_secs: u64,
    #[arg(long, default_value_t = 0.5)]
    pub short_lot_share: f64,
    /// The web SKUs get this shelf life (`PUT /v1/skus`, where they have none) before the run,
    /// and the long-lived deliveries name no lot: the service makes each a lot expiring this
    /// many days after it came in. 0 leaves the catalogue alone (the deliveries then say their
    /// expiry, two days ahead).
    #[arg(long, default_value_t = 2)]
    pub shelf_life_days: u32,
    /// Requests in flight at once (HTTP requests and unacknowledged POS publishes).
    #[arg(long, default_value_t = 512)]
    pub inflight_max: usize,
    #[arg(long, default_value = "127.0.0.1")]
    pub mqtt_host: String,
    /// The broker's port (`make run` starts the project's broker on 1884).
    #[arg(long, default_value_t = 1884)]
    pub mqtt_port: u16,
    /// The service's `mqtt.topic_prefix`.
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// The service's process id when it runs on this machine: its CPU and memory are then
    /// read from /proc at 10 ms precision instead of from `/metrics` (whole CPU seconds).
    #[arg(long)]
    pub service_pid: Option<u32>,
    /// Other processes to sample beside the service (CPU and memory from /proc), as
    /// NAME=PID: `--pid redis=123 --pid mongodb=456 --pid broker=789`.
    #[arg(long = "pid", value_parser = parse_pid)]
    pub pids: Vec<(String, u32)>,
    /// Width of the timeline buckets (latency over time in the report's plot), in seconds:
    /// 1 for a short run, more for a soak.
    #[arg(long, default_value_t = 1)]
    pub bucket_secs: u64,
    /// How long the audit waits for the ledger outbox to drain after the load.
    #[arg(long, default_value_t = 60)]
    pub drain_secs: u64,
    /// Seed of the simulator's choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the JSON report goes (default `load/out/festival-<unix time>.json`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

pub(crate) fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid} is not a process id"))?;
    Ok((name.to_owned(), pid))
}
