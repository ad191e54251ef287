//! The agent's Prometheus metrics (`GET /metrics`), one registry per agent. Gauges of the
//! store (pending events, oldest pending, disk) are set from `Store::stats` when scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Webhook calls by outcome: `stored`, `duplicate`, or the error code of the answer
    /// (`validation_failed`, `conflict`, `payload_too_large`, `request_timeout`, `bad_request`,
    /// `unauthorized`, `store_full`, `store_error`).
    pub sales: IntCounterVec,
    /// Events sent towards shelfsync: `first` or `resend`.
    pub sent: IntCounterVec,
    /// Events shelfsync settled: `applied` or `rejected`.
    pub settled: IntCounterVec,
    /// From a sale's record to shelfsync's word that it is applied.
    pub apply_seconds: Histogram,
    pub link_up: IntGauge,
    pub link_losses: IntCounter,
    pub pending: IntGauge,
    pub oldest_pending_seconds: IntGauge,
    pub rejected_kept: IntGauge,
    pub disk_bytes: IntGauge,
    pub stock_values: IntGauge,
    pub stock_updates: IntCounter,
    pub cleaned: IntCounterVec,
    /// PUBACKs from the broker: lines the broker took (not yet shelfsync's word).
    pub broker_acks: IntCounter,
    /// shelfsync's answers dropped because the settler was behind (the lines go again).
    pub answers_dropped: IntCounter,
    /// Stock values of more SKUs than the inbox holds, dropped before their write.
    pub stock_dropped: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("shelfsync_agent".into()), None).expect("registry");
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let sales = counter_vec("sales_total", "Sale webhooks by outcome", "outcome");
        let sent = counter_vec(
            "events_sent_total",
            "Events sent to shelfsync: first or resend",
            "kind",
        );
        let settled = counter_vec(
            "events_settled_total",
            "Events shelfsync settled: applied or rejected",
            "result",
        );
        let cleaned = counter_vec(
            "cleaned_total",
            "Rows the clean-up deleted: events or vouchers",
            "kind",
        );
        let apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "apply_seconds",
                "From a sale's record to shelfsync's word that it is applied",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
        )
        .expect("metric");
        registry
            .register(Box::new(apply_seconds.clone()))
            .expect("register");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let link_losses = counter("link_losses_total", "Times the link to shelfsync was lost");
        let stock_updates = counter(
            "stock_updates_total",
            "Stock values received from shelfsync",
        );
        let broker_acks = counter(
            "broker_acks_total",
            "PUBACKs from the broker: lines it took, not yet applied",
        );
        let answers_dropped = counter(
            "answers_dropped_total",
            "shelfsync's answers dropped while the settler was behind; their lines are sent again",
        );
        let stock_dropped = counter(
            "stock_dropped_total",
            "Stock values dropped because more SKUs than the inbox holds waited for their write",
        );
        Self {
            stock_dropped,
            broker_acks,
            answers_dropped,
            sales,
            sent,
            settled,
            apply_seconds,
            link_up: gauge("link_up", "1 while the link to shelfsync is up"),
            link_losses,
            pending: gauge(
                "events_pending",
                "Events recorded and not yet settled by shelfsync",
            ),
            oldest_pending_seconds: gauge(
                "oldest_pending_seconds",
                "Age of the oldest event not yet settled",
            ),
            rejected_kept: gauge(
                "events_rejected_kept",
                "Rejected events kept for the operator",
            ),
            disk_bytes: gauge("store_bytes", "The store's files on disk"),
            stock_values: gauge("stock_values", "SKUs with a stock value from shelfsync"),
            stock_updates,
            cleaned,
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
