//! shelfsync-agent: runs at an outlet, between its till and shelfsync.
//!
//! ```text
//! till ──POST /v1/sales──> http.rs ──record (fsync)──> store.rs (SQLite, WAL) ──202──> till
//!                                                          │ pending events
//!                                                          ▼
//!                      link/ (MQTT 5 QoS 1, persistent session; or HTTP) ──> shelfsync
//!                          ▲ acks/{outlet}: applied / rejected ──settle──> store
//!                          ▲ stock/{outlet}/+ ──> store (stock) ──GET /v1/stock──> till
//! ```
//!
//! A sale is on disk before the till hears `202`, and leaves the store's pending set only
//! when shelfsync says it is applied (or refused). Every line of a voucher is one shelfsync
//! movement whose event id depends only on the outlet, the voucher and the line, so a
//! till's retry, a resend after a lost ack and a replay after kill -9 all name the same
//! event, which shelfsync applies once.

pub mod http;
pub mod link;
pub mod metrics;
pub mod sale;
pub mod settings;
pub mod sse;
pub mod store;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::link::{LinkState, Outbox};
use crate::metrics::Metrics;
use crate::settings::{Settings, Via};
use crate::store::{blocking, Store};

/// A built agent: its store open, its listener bound, its tasks not yet started.
pub struct Agent {
    settings: Settings,
    server: actix_web::dev::Server,
    port: u16,
    outbox: Arc<Outbox>,
    link: Arc<LinkState>,
}

impl Agent {
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let outlet = settings.outlet();
        let store = Arc::new(Store::open(
            &settings.data_dir,
            &outlet,
            settings.store.clone(),
        )?);
        let metrics = Arc::new(Metrics::new());
        let outbox = Outbox::new(store.clone(), metrics.clone());
        let link = Arc::new(LinkState::new(metrics.clone()));
        let state = web::Data::new(http::State {
            settings: settings.clone(),
            outlet,
            store,
            outbox: outbox.clone(),
            link: link.clone(),
            metrics,
            token_digest: (settings.http.token.as_ref())
                .map(|t| <[u8; 32]>::from(Sha256::digest(t.expose().as_bytes()))),
        });
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| format!("binding {}:{}", settings.http.host, settings.http.port))?;
        let port = listener.local_addr()?.port();
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
                // The till is one client; two workers keep the status page answering beside it.
                .workers(2)
                // Headers must arrive within this; the body has its own deadline (http.rs).
                .client_request_timeout(Duration::from_secs(settings.http.body_read_secs))
                .shutdown_timeout(5)
                .listen(listener)?
                .run();
        Ok(Self {
            settings,
            server,
            port,
            outbox,
            link,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the link and the clean-up and serves until a signal stops the server. What was
    /// recorded stays in the store for the next start.
    pub async fn run(self) -> std::io::Result<()> {
        let s = &self.settings;
        info!(outlet = %s.outlet, port = self.port, via = ?s.forward.via, data_dir = %s.data_dir.display(), "shelfsync-agent started");
        let link = match s.forward.via {
            Via::Mqtt => tokio::spawn(link::mqtt::run(
                s.clone(),
                self.outbox.clone(),
                self.link.clone(),
            )),
            Via::Http => tokio::spawn(link::http::run(
                s.clone(),
                self.outbox.clone(),
                self.link.clone(),
            )),
        };
        let cleanup = tokio::spawn(clean_up(self.outbox.clone(), s.store.cleanup_secs));
        let served = self.server.await;
        link.abort();
        cleanup.abort();
        info!("shelfsync-agent stopped; what is pending stays in the store");
        served
    }
}

/// Deletes what is done every `store.cleanup_secs`.
async fn clean_up(outbox: Arc<Outbox>, every_secs: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(every_secs));
    loop {
        tick.tick().await;
        let now = shelfsync::domain::now_ms();
        match blocking(&outbox.store, move |s| s.cleanup(now)).await {
            Ok(c) => {
                let m = &outbox.metrics.cleaned;
                m.with_label_values(&["events"]).inc_by(c.events);
                m.with_label_values(&["vouchers"]).inc_by(c.vouchers);
            }
            Err(e) => warn!(error = %format!("{e:#}"), "the store's clean-up failed"),
        }
    }
}
