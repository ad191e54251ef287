//! Prometheus metrics, one registry per application (tests run several side by side).

use crate::domain::OutletId;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why a request was shed (`shelfsync_shed_total{reason}`), as the call sites name it.
pub mod shed_reason {
    /// The outlet's queue was full.
    pub const OUTLET_QUEUE: &str = "outlet_queue";
    /// The outlet's ledger outbox was full.
    pub const OUTBOX_FULL: &str = "outbox_full";
    /// The outlet's ledger lag was past its budget.
    pub const LEDGER_LAG: &str = "ledger_lag";
}

/// Why a hold may be shed: every series the alert rules read is laid down at zero.
pub const SHED_HOLD_REASONS: [&str; 3] = [
    shed_reason::OUTLET_QUEUE,
    shed_reason::OUTBOX_FULL,
    shed_reason::LEDGER_LAG,
];

pub struct Metrics {
    registry: Registry,
    pub http_seconds: HistogramVec,
    pub reservations: IntCounterVec,
    pub movements: IntCounterVec,
    pub oversells: IntCounter,
    pub reroutes: IntCounterVec,
    pub at_risk_holds: IntGaugeVec,
    pub at_risk_units: IntGaugeVec,
    pub expirations: IntCounter,
    /// Units of lots written off at their expiry, by outlet.
    pub lot_expired_units: IntCounterVec,
    /// Alerts raised and cleared (alerts.rs), by kind and state.
    pub alerts: IntCounterVec,
    /// Alerts raised now, by outlet and kind.
    pub alerts_raised: IntGaugeVec,
    /// Alert deliveries by channel (`webhook`, `mqtt`) and outcome.
    pub alert_deliveries: IntCounterVec,
    pub alert_webhook_queue: IntGauge,
    /// Forecasts the alert engine holds (one per outlet and SKU sold in its history).
    pub alert_forecasts: IntGauge,
    pub outlet_batch_ops: HistogramVec,
    pub outlet_unavailable: IntCounterVec,
    pub owned_outlets: IntGaugeVec,
    pub ownership_changes: IntCounterVec,
    pub fenced_writes: IntCounterVec,
    pub followed_commits: IntCounterVec,
    pub forwarded_requests: IntCounterVec,
    pub follower_resyncs: IntCounterVec,
    pub ledger_outbox_entries: IntGaugeVec,
    pub ledger_outbox_age_ms: IntGaugeVec,
    pub ledger_documents: IntCounter,
    pub ledger_write_errors: IntCounter,
    pub ledger_lag_seconds: GaugeVec,
    pub ledger_lag_entries: IntGaugeVec,
    pub ledger_insert_seconds: Histogram,
    pub shed: IntCounterVec,
    pub export_rows: IntCounterVec,
    pub whatsapp_refused: IntCounterVec,
    pub mqtt_connected: IntGauge,
    pub mqtt_reconnects: IntCounter,
    pub mqtt_messages_in: IntCounterVec,
    pub mqtt_messages_out: IntCounterVec,
    pub mqtt_dlq: IntCounter,
    pub mqtt_publish_queue: IntGauge,
    pub mqtt_publish_window: IntGauge,
    pub mqtt_publish_outstanding: IntGauge,
    pub mqtt_acks: IntCounterVec,
    pub mqtt_pos_waits: IntCounter,
    pub mqtt_orders_dropped: IntGauge,
    pub mqtt_session_taken_over: IntCounter,
    pub stream_clients: IntGaugeVec,
    pub stream_dropped: IntCounterVec,
    /// SSE streams opened: `fresh` (no Last-Event-ID), `resumed` (only what was missed),
    /// `snapshot` (asked to resume from an event the hub no longer holds).
    pub stream_starts: IntCounterVec,
    pub stream_refused: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub reconciler_drift_skus: IntGaugeVec,
    pub reconciler_drift: IntCounterVec,
    pub reconciler_healed: IntCounterVec,
    pub reconciler_skipped: IntCounterVec,
    pub reconciler_pass_seconds: Histogram,
    /// 1 when `/readyz` would answer ready, as of the scrape.
    pub ready: IntGauge,
    /// Each dependency (redis, mongo, mqtt) reachable (1) or not, as of the scrape.
    pub dependency_up: IntGaugeVec,
    /// 1 for each outlet of the catalogue, so that an outlet no process owns can be named.
    pub catalogue_outlet: IntGaugeVec,
    /// When this process last received a POS message of each outlet (Unix seconds), or when
    /// it started if none since.
    pub pos_last_message: GaugeVec,
    started_at_secs: f64,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("shelfsync".into()), None).expect("registry");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("metric");
        let reservations = IntCounterVec::new(
            Opts::new(
                "reservations_total",
                "Reservation requests by operation and outcome",
            ),
            &["op", "outcome"],
        )
        .expect("metric");
        let movements = IntCounterVec::new(
            Opts::new("movements_total", "Movements by kind and outcome"),
            &["kind", "outcome"],
        )
        .expect("metric");
        let oversells = IntCounter::new(
            "oversell_units_total",
            "Held units a counter sale, wastage or count left uncovered that no other outlet \
             could take (counted once per hold; the goal is 0)",
        )
        .expect("metric");
        let reroutes = IntCounterVec::new(
            Opts::new(
                "reroutes_total",
                "Holds left short by a counter sale, by what became of them",
            ),
            &["outcome"],
        )
        .expect("metric");
        let at_risk_holds = IntGaugeVec::new(
            Opts::new(
                "oversell_risk_holds",
                "Live holds an outlet cannot cover and no other outlet could take, now",
            ),
            &["outlet"],
        )
        .expect("metric");
        let at_risk_units = IntGaugeVec::new(
            Opts::new(
                "oversell_risk_units",
                "Units the holds in shelfsync_oversell_risk_holds are short (not covered), now",
            ),
            &["outlet"],
        )
        .expect("metric");
        let expirations =
            IntCounter::new("expirations_total", "Holds released by their expiry timer")
                .expect("metric");
        let lot_expired_units = IntCounterVec::new(
            Opts::new(
                "lot_expired_units_total",
                "Units of lots written off at their expiry (one `expiry` ledger document a lot)",
            ),
            &["outlet"],
        )
        .expect("metric");
        let alerts = IntCounterVec::new(
            Opts::new(
                "alerts_total",
                "Sell-out and low-stock alerts raised and cleared (each crossing once)",
            ),
            &["kind", "state"],
        )
        .expect("metric");
        let alerts_raised = IntGaugeVec::new(
            Opts::new(
                "alerts_raised",
                "Alerts raised now, of the outlets this process owns",
            ),
            &["outlet", "kind"],
        )
        .expect("metric");
        let alert_deliveries = IntCounterVec::new(
            Opts::new(
                "alert_deliveries_total",
                "Alert deliveries by channel (webhook, mqtt) and outcome (delivered; dropped \
                 from a full queue; failed after every try)",
            ),
            &["channel", "outcome"],
        )
        .expect("metric");
        let alert_webhook_queue = IntGauge::new(
            "alert_webhook_queue",
            "Alerts waiting for the webhook (at most alerts.queue_max)",
        )
        .expect("metric");
        let alert_forecasts = IntGauge::new(
            "alert_forecasts",
            "Sales histories the alert engine keeps (outlet and SKU pairs that sold)",
        )
        .expect("metric");
        let outlet_batch_ops = HistogramVec::new(
            HistogramOpts::new(
                "outlet_batch_ops",
                "Operations per Redis round trip of an outlet (group commit)",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
            &["outlet"],
        )
        .expect("metric");
        let outlet_unavailable = IntCounterVec::new(
            Opts::new(
                "outlet_unavailable_total",
                "Operations answered 503 by an outlet, by cause",
            ),
            &["outlet", "cause"],
        )
        .expect("metric");
        let owned_outlets = IntGaugeVec::new(
            Opts::new(
                "owned_outlets",
                "Outlets this process owns (1) through their lease, by outlet",
            ),
            &["node", "outlet"],
        )
        .expect("metric");
        let ownership_changes = IntCounterVec::new(
            Opts::new(
                "ownership_changes_total",
                "Outlet leases acquired, renewed after a fencing refusal, handed over, \
                 released at a stop, or lost (fenced, or not renewed within the lease)",
            ),
            &["outlet", "change"],
        )
        .expect("metric");
        let fenced_writes = IntCounterVec::new(
            Opts::new(
                "fenced_writes_total",
                "Writes of this process that an outlet's script refused because its lease's \
                 token is no longer the outlet's (nothing applied)",
            ),
            &["outlet"],
        )
        .expect("metric");
        let followed_commits = IntCounterVec::new(
            Opts::new(
                "followed_commits_total",
                "Commits of outlets another process owns, as this process's view took them: \
                 applied in seq order, older than the view (skipped), or past a gap (resync)",
            ),
            &["outcome"],
        )
        .expect("metric");
        let forwarded_requests = IntCounterVec::new(
            Opts::new(
                "forwarded_requests_total",
                "Requests for an outlet another process owns: sent to the owner and answered \
                 (forwarded), not sent or not answered so the 503 stood (unreachable), and \
                 signed requests from another process taken (received) or refused \
                 (bad_signature)",
            ),
            &["outcome"],
        )
        .expect("metric");
        let follower_resyncs = IntCounterVec::new(
            Opts::new(
                "follower_resyncs_total",
                "Reads of a followed outlet's whole state from Redis, by reason (start, \
                 gap in the commits, the seq moved without a commit seen, reconnect)",
            ),
            &["outlet", "reason"],
        )
        .expect("metric");
        let ledger_outbox_entries = IntGaugeVec::new(
            Opts::new(
                "ledger_outbox_entries",
                "Outbox entries not yet durable in the ledger",
            ),
            &["outlet"],
        )
        .expect("metric");
        let ledger_outbox_age_ms = IntGaugeVec::new(
            Opts::new(
                "ledger_outbox_age_ms",
                "Age of the oldest outbox entry when the writer last read it",
            ),
            &["outlet"],
        )
        .expect("metric");
        let ledger_documents =
            IntCounter::new("ledger_documents_total", "Ledger documents written").expect("metric");
        let ledger_write_errors = IntCounter::new(
            "ledger_write_errors_total",
            "Ledger batches that failed and will be retried",
        )
        .expect("metric");

        let ledger_lag_seconds = GaugeVec::new(
            Opts::new(
                "ledger_lag_seconds",
                "Age of the outlet's oldest change not yet durable in the ledger (0 when none)",
            ),
            &["outlet"],
        )
        .expect("metric");
        let ledger_lag_entries = IntGaugeVec::new(
            Opts::new(
                "ledger_lag_entries",
                "The outlet's changes committed in Redis and not yet durable in the ledger",
            ),
            &["outlet"],
        )
        .expect("metric");
        let ledger_insert_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ledger_insert_seconds",
                "Time of one ledger insert_many (the writer's batch) at the MongoDB server",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("metric");
        let shed = IntCounterVec::new(
            Opts::new(
                "shed_total",
                "Requests refused to keep the service within its budgets (nothing was changed), \
                 by operation and reason",
            ),
            &["outlet", "operation", "reason"],
        )
        .expect("metric");
        let export_rows = IntCounterVec::new(
            Opts::new("export_rows_total", "Rows written by the exports, by what"),
            &["what"],
        )
        .expect("metric");
        let whatsapp_refused = IntCounterVec::new(
            Opts::new(
                "whatsapp_refused_total",
                "WhatsApp orders refused by the per-sender caps, nothing held: a sender of \
                 whatsapp.senders past its open holds or units (sender_cap), a sender not in \
                 it past the unknown sender's caps or under unknown_sender = refuse \
                 (unknown_sender)",
            ),
            &["reason"],
        )
        .expect("metric");

        let mqtt_connected =
            IntGauge::new("mqtt_connected", "1 while the MQTT session is connected")
                .expect("metric");
        let mqtt_reconnects =
            IntCounter::new("mqtt_reconnects_total", "MQTT connections lost").expect("metric");
        let mqtt_messages_in = IntCounterVec::new(
            Opts::new("mqtt_messages_in_total", "POS messages by outcome"),
            &["outcome"],
        )
        .expect("metric");
        let mqtt_messages_out = IntCounterVec::new(
            Opts::new("mqtt_messages_out_total", "Messages published by kind"),
            &["kind"],
        )
        .expect("metric");
        let mqtt_dlq =
            IntCounter::new("mqtt_dlq_total", "POS messages rejected to dlq/").expect("metric");
        let mqtt_publish_queue = IntGauge::new(
            "mqtt_publish_queue",
            "Stock values and orders waiting to be published",
        )
        .expect("metric");
        let mqtt_publish_window = IntGauge::new(
            "mqtt_publish_window",
            "Publishes and subscribes that may be unacknowledged by the broker at once \
             (below its Receive Maximum)",
        )
        .expect("metric");
        let mqtt_publish_outstanding = IntGauge::new(
            "mqtt_publish_outstanding",
            "Our publishes and subscribes the broker has not acknowledged yet",
        )
        .expect("metric");
        let mqtt_acks = IntCounterVec::new(
            Opts::new(
                "mqtt_acks_total",
                "POS acknowledgments: sent, sent_after_retry (the request channel was full), \
                 retried (one per retry), left_to_redelivery (the connection was lost first)",
            ),
            &["outcome"],
        )
        .expect("metric");
        let mqtt_pos_waits = IntCounter::new(
            "mqtt_pos_waits_total",
            "Times a POS message was not yet durable (or a store unreachable) within \
             ledger.durable_wait_secs and was tried again, unacknowledged",
        )
        .expect("metric");
        let mqtt_orders_dropped = IntGauge::new(
            "mqtt_orders_dropped",
            "Orders dropped from a full publish queue",
        )
        .expect("metric");
        let mqtt_session_taken_over = IntCounter::new(
            "mqtt_session_taken_over_total",
            "Times the broker dropped our connection because another client connected with our \
             client id (MQTT 5 reason 0x8E): a second instance with the same mqtt.client_id, or \
             a client the broker's ACLs should have refused",
        )
        .expect("metric");
        let stream_clients = IntGaugeVec::new(
            Opts::new("stream_clients", "Connected live stream clients"),
            &["kind"],
        )
        .expect("metric");
        let stream_dropped = IntCounterVec::new(
            Opts::new(
                "stream_dropped_total",
                "Live stream clients dropped for falling behind",
            ),
            &["kind"],
        )
        .expect("metric");
        let stream_starts = IntCounterVec::new(
            Opts::new(
                "stream_starts_total",
                "SSE streams opened: fresh, resumed (only the missed events), snapshot (resume asked, events no longer held)",
            ),
            &["outcome"],
        )
        .expect("metric");
        let stream_refused = IntCounterVec::new(
            Opts::new(
                "stream_refused_total",
                "Live stream opens and WebSocket subscribes refused, by why: clients_max, key_slots, subscribe_rate",
            ),
            &["kind", "reason"],
        )
        .expect("metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused 429, by whose budget ran out: key (an API key's) or address (requests without a valid key)",
            ),
            &["by"],
        )
        .expect("metric");
        let per_outlet = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["outlet"]).expect("metric")
        };
        let reconciler_drift_skus = IntGaugeVec::new(
            Opts::new(
                "reconciler_drift_skus",
                "SKUs whose Redis counters differed from the ledger at the last pass",
            ),
            &["outlet"],
        )
        .expect("metric");
        let reconciler_drift = per_outlet(
            "reconciler_drift_skus_total",
            "SKUs found drifted from the ledger, over all passes",
        );
        let reconciler_healed = per_outlet(
            "reconciler_healed_skus_total",
            "Drifted SKUs set back to the ledger's numbers",
        );
        let reconciler_skipped = per_outlet(
            "reconciler_skipped_total",
            "Outlet checks a pass could not complete (ledger behind, store unreachable)",
        );
        let reconciler_pass_seconds = Histogram::with_opts(
            HistogramOpts::new("reconciler_pass_seconds", "Time of one reconciler pass")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("metric");
        let ready = IntGauge::new(
            "ready",
            "1 when this process is ready (/readyz): Redis, MongoDB and the MQTT session reachable, \
             as of the scrape",
        )
        .expect("metric");
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "dependency_up",
                "Each dependency (redis, mongo, mqtt) reachable from this process (1) or not, \
                 as of the scrape",
            ),
            &["dependency"],
        )
        .expect("metric");
        let catalogue_outlet = IntGaugeVec::new(
            Opts::new(
                "catalogue_outlet",
                "1 for each outlet of the catalogue (an outlet that no process's \
                 shelfsync_owned_outlets shows as 1 has no owner)",
            ),
            &["outlet"],
        )
        .expect("metric");
        // Zero clients is a reading: the dashboard charts both kinds from the start. POS
        // messages left to redelivery are alerted on with increase(), which sees a counter's
        // first count only if the series was there before it.
        for kind in ["sse", "ws"] {
            stream_clients.with_label_values(&[kind]);
        }
        mqtt_acks.with_label_values(&["left_to_redelivery"]);
        let pos_last_message = GaugeVec::new(
            Opts::new(
                "pos_last_message_timestamp_seconds",
                "When this process last received a POS message of the outlet (Unix seconds), or \
                 when it started if none since",
            ),
            &["outlet"],
        )
        .expect("metric");
        for c in [
            Box::new(http_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(pos_last_message.clone()),
            Box::new(ready.clone()),
            Box::new(dependency_up.clone()),
            Box::new(catalogue_outlet.clone()),
            Box::new(reservations.clone()),
            Box::new(movements.clone()),
            Box::new(oversells.clone()),
            Box::new(reroutes.clone()),
            Box::new(at_risk_holds.clone()),
            Box::new(at_risk_units.clone()),
            Box::new(expirations.clone()),
            Box::new(lot_expired_units.clone()),
            Box::new(alerts.clone()),
            Box::new(alerts_raised.clone()),
            Box::new(alert_deliveries.clone()),
            Box::new(alert_webhook_queue.clone()),
            Box::new(alert_forecasts.clone()),
            Box::new(outlet_batch_ops.clone()),
            Box::new(outlet_unavailable.clone()),
            Box::new(owned_outlets.clone()),
            Box::new(ownership_changes.clone()),
            Box::new(fenced_writes.clone()),
            Box::new(followed_commits.clone()),
            Box::new(forwarded_requests.clone()),
            Box::new(follower_resyncs.clone()),
            Box::new(ledger_outbox_entries.clone()),
            Box::new(ledger_outbox_age_ms.clone()),
            Box::new(ledger_documents.clone()),
            Box::new(ledger_write_errors.clone()),
            Box::new(ledger_lag_seconds.clone()),
            Box::new(ledger_lag_entries.clone()),
            Box::new(ledger_insert_seconds.clone()),
            Box::new(shed.clone()),
            Box::new(export_rows.clone()),
            Box::new(whatsapp_refused.clone()),
            Box::new(mqtt_connected.clone()),
            Box::new(mqtt_reconnects.clone()),
            Box::new(mqtt_messages_in.clone()),
            Box::new(mqtt_messages_out.clone()),
            Box::new(mqtt_dlq.clone()),
            Box::new(mqtt_publish_queue.clone()),
            Box::new(mqtt_publish_window.clone()),
            Box::new(mqtt_publish_outstanding.clone()),
            Box::new(mqtt_acks.clone()),
            Box::new(mqtt_pos_waits.clone()),
            Box::new(mqtt_orders_dropped.clone()),
            Box::new(mqtt_session_taken_over.clone()),
            Box::new(stream_clients.clone()),
            Box::new(stream_dropped.clone()),
            Box::new(stream_starts.clone()),
            Box::new(stream_refused.clone()),
            Box::new(rate_limited.clone()),
            Box::new(reconciler_drift_skus.clone()),
            Box::new(reconciler_drift.clone()),
            Box::new(reconciler_healed.clone()),
            Box::new(reconciler_skipped.clone()),
            Box::new(reconciler_pass_seconds.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        // CPU seconds, resident memory, open fds and threads of this process
        // (`shelfsync_process_*`; Linux only), which the festival simulator samples.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Self {
            registry,
            http_seconds,
            reservations,
            movements,
            oversells,
            reroutes,
            at_risk_holds,
            at_risk_units,
            expirations,
            lot_expired_units,
            alerts,
            alerts_raised,
            alert_deliveries,
            alert_webhook_queue,
            alert_forecasts,
            outlet_batch_ops,
            outlet_unavailable,
            owned_outlets,
            ownership_changes,
            fenced_writes,
            followed_commits,
            forwarded_requests,
            follower_resyncs,
            ledger_outbox_entries,
            ledger_outbox_age_ms,
            ledger_documents,
            ledger_write_errors,
            ledger_lag_seconds,
            ledger_lag_entries,
            ledger_insert_seconds,
            shed,
            export_rows,
            whatsapp_refused,
            mqtt_connected,
            mqtt_reconnects,
            mqtt_messages_in,
            mqtt_messages_out,
            mqtt_dlq,
            mqtt_publish_queue,
            mqtt_publish_window,
            mqtt_publish_outstanding,
            mqtt_acks,
            mqtt_pos_waits,
            mqtt_orders_dropped,
            mqtt_session_taken_over,
            stream_clients,
            stream_dropped,
            stream_starts,
            stream_refused,
            rate_limited,
            reconciler_drift_skus,
            reconciler_drift,
            reconciler_healed,
            reconciler_skipped,
            reconciler_pass_seconds,
            ready,
            dependency_up,
            catalogue_outlet,
            pos_last_message,
            started_at_secs: crate::domain::now_ms() as f64 / 1000.0,
        }
    }

    /// Lays down every outlet's series that the alert rules (deploy/prometheus) read, at zero
    /// where they have not counted yet: Prometheus's `increase()` sees a counter's first count
    /// only if the series existed before it, and an outlet with no owner is one whose
    /// `catalogue_outlet` has no `owned_outlets` of 1 beside it.
    /// `pos_seen` gives when this process last received a POS message of an outlet (Unix ms).
    pub fn observe_outlets<'a>(
        &self,
        outlets: impl IntoIterator<Item = &'a OutletId>,
        pos_seen: impl Fn(&OutletId) -> Option<i64>,
    ) {
        for outlet in outlets {
            let o = outlet.as_str();
            self.catalogue_outlet.with_label_values(&[o]).set(1);
            let pos = pos_seen(outlet).map_or(self.started_at_secs, |ms| ms as f64 / 1000.0);
            self.pos_last_message.with_label_values(&[o]).set(pos);
            for counter in [
                &self.reconciler_drift,
                &self.reconciler_healed,
                &self.reconciler_skipped,
                &self.fenced_writes,
            ] {
                counter.with_label_values(&[o]);
            }
            for reason in SHED_HOLD_REASONS {
                self.shed.with_label_values(&[o, "hold", reason]);
            }
            self.at_risk_holds.with_label_values(&[o]);
            self.at_risk_units.with_label_values(&[o]);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
