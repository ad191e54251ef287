//! Wiring: `Core` (stores, actors, the core's `Services`) and `Application` (the MQTT
//! session, the WhatsApp worker and the HTTP server over a core). Tests, `serve` and `import`
//! all build through here.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Supervisor};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, HttpServer};
use anyhow::Context;
use tracing::info;

use crate::actors::ledger_writer::{self, FlushAll};
use crate::actors::outlet::{Drain, OutletLimits};
use crate::actors::reconciler::{self, PassReport, RunPass};
use crate::actors::{
    AlertEngine, AlertInbox, Follower, LedgerWriter, OutboxSignal, Owners, Ownership, Reconciler,
    Shared,
};
use crate::domain::OutletId;
use crate::durable::Durability;
use crate::health::{Health, MqttStatus};
use crate::http::auth::Auth;
use crate::http::AppState;
use crate::ledger::Ledger;
use crate::live_catalogue::LiveCatalogue;
use crate::metrics::Metrics;
use crate::mqtt::{Disconnect, MqttSession};
use crate::reroute_state::RerouteState;
use crate::services::Services;
use crate::settings::Settings;
use crate::stock_view::StockView;
use crate::store::RedisStore;
use crate::zones::Zones;

/// Everything but the edges: connections, the actors, and the `Services` over them.
pub struct Core {
    pub services: Arc<Services>,
    writer: Addr<LedgerWriter>,
    reconciler: Addr<Reconciler>,
    ownership: Arc<Ownership>,
    stop_ownership: Arc<AtomicBool>,
}

impl Core {
    /// Connects, creates indexes, starts the writer and one actor per outlet, and returns once
    /// every outlet is loaded (rebuilt from the ledger where Redis had lost it).
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let store = RedisStore::connect(&settings.redis).await?;
        store.ping().await?;
        let started = std::time::Instant::now();
        let ledger = Ledger::connect(&settings.mongo).await?;
        ledger.ensure_indexes().await?;
        let catalogue = Arc::new(LiveCatalogue::load(&settings.catalogue, &ledger).await?);
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ledger indexes ready"
        );
        let ids: Vec<OutletId> = catalogue
            .now()
            .outlets
            .iter()
            .map(|o| o.id.clone())
            .collect();
        // The writer starts after the last document it can prove durable (`provably_durable`).
        let mut start = Vec::with_capacity(ids.len());
        for id in &ids {
            let durable = ledger_writer::provably_durable(&store, &ledger, id).await?;
            start.push((id.clone(), durable));
        }
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ledger watermarks read"
        );
        let signal = OutboxSignal::new(ids.iter().map(|o| (o.clone(), store.keys(o))));
        let shared = Shared {
            store,
            ledger,
            stock: Arc::new(StockView::new(
                ids.iter().cloned(),
                settings.catalogue.expiring_soon_mins,
            )),
            durable: Arc::new(Durability::new(start)),
            signal: Arc::new(signal),
            ledger_gate: Arc::new(tokio::sync::Mutex::new(())),
            metrics: Arc::new(Metrics::new()),
            feed: Arc::new(crate::feed::Feed::new(
                settings.mqtt.orders_queue_max,
                settings.alerts.queue_max,
            )),
            hub: Arc::new(crate::hub::Hub::new(
                settings.streams.ring_events,
                settings.streams.resume_events,
                settings.streams.clients_max,
                settings.streams.clients_per_key_max,
            )),
            owners: Arc::new(Owners::new(
                &settings.cluster.node_id,
                Duration::from_millis(settings.cluster.lease_ms),
            )),
            alerts: Arc::new(AlertInbox::new(settings.reports.utc_offset_minutes)),
        };
        let writer = {
            let shared = shared.clone();
            let batch = settings.ledger.batch_size_max;
            let poll = Duration::from_millis(settings.ledger.poll_interval_ms);
            Supervisor::start(move |_| LedgerWriter::new(shared, batch, poll))
        };
        let limits = OutletLimits {
            batch_size_max: settings.outlet.batch_size_max,
            pending_max: settings.outlet.pending_max,
            mailbox_capacity: settings.outlet.mailbox_capacity,
            res_retain_ms: settings.reservations.retain_ms(),
            event_retain_ms: settings.movements.retain_ms(),
            outbox_max: settings.ledger.outbox_max,
        };
        // The first round takes the leases rendezvous gives this process among the live ones
        // (all of them when it runs alone); the outlets load before the core answers.
        let ownership = Arc::new(Ownership::new(shared.clone(), ids.clone(), limits));
        let (started_actors, _) = ownership
            .round()
            .await
            .context("taking the outlets' leases")?;
        for addr in &started_actors {
            addr.send(Drain)
                .await
                .context("an outlet actor stopped while loading")?;
        }
        let stop_ownership = Arc::new(AtomicBool::new(false));
        ownership.clone().spawn(stop_ownership.clone());
        Follower::spawn(shared.clone(), stop_ownership.clone());
        let webhook = crate::webhook::Webhook::new(&settings.alerts, shared.metrics.clone())?;
        if let Some(webhook) = &webhook {
            webhook.clone().spawn(stop_ownership.clone());
        }
        AlertEngine::spawn(
            shared.clone(),
            settings.alerts.clone(),
            settings.reports.utc_offset_minutes,
            webhook,
            stop_ownership.clone(),
        );
        info!(
            owned = started_actors.len(),
            outlets = ids.len(),
            node = %settings.cluster.node_id,
            skus = catalogue.now().skus.len(),
            "core started"
        );
        let settings = Arc::new(settings);
        let reconciler = {
            let (shared, settings) = (shared.clone(), settings.clone());
            Supervisor::start(move |_| Reconciler::new(shared, settings))
        };
        let zones = Zones::load(
            &settings.catalogue.zones_file,
            &catalogue.now(),
            &shared.ledger,
        )
        .await?;
        let services = Arc::new(Services {
            reroute: RerouteState::new(ids.iter().cloned()),
            shared,
            catalogue,
            settings,
            zones,
            ownership: ownership.clone(),
            growing: tokio::sync::Mutex::new(()),
            pending: std::sync::Mutex::default(),
            grown: tokio::sync::watch::Sender::new(0),
            pos_links: Arc::default(),
        });
        spawn_catalogue_refresh(services.clone(), stop_ownership.clone());
        Ok(Self {
            services,
            writer,
            reconciler,
            ownership,
            stop_ownership,
        })
    }

    /// Lets every owned outlet finish what it has queued, writes every outbox to the ledger,
    /// stops the actors and gives the leases up, so that the other processes take the outlets
    /// over at their next round (a third of the lease) instead of when the leases expire.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.reconciler.do_send(reconciler::Stop);
        self.stop_ownership.store(true, Ordering::Release);
        let actors = self.services.shared.owners.actors();
        for addr in &actors {
            let _ = addr.send(Drain).await;
        }
        let flushed = self.writer.send(FlushAll).await;
        self.ownership.release_all().await;
        self.writer.do_send(ledger_writer::Stop);
        flushed
            .context("the ledger writer stopped")?
            .map_err(|e| anyhow::anyhow!("flushing the ledger: {e}"))?;
        info!("core stopped; every outbox is in the ledger");
        Ok(())
    }
}

/// Until `stop`: reads the catalogue and zone edits other processes made every
/// `catalogue.refresh_ms`, and grows the per-outlet structures whenever an outlet is added,
/// here or there (live_catalogue.rs).
fn spawn_catalogue_refresh(services: Arc<Services>, stop: Arc<AtomicBool>) {
    let every = Duration::from_millis(services.settings.catalogue.refresh_ms);
    let refresh_stop = stop.clone();
    let reader = services.clone();
    actix::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !refresh_stop.load(Ordering::Acquire) {
            tick.tick().await;
            if let Err(e) = reader.catalogue.refresh().await {
                tracing::warn!(error = %format!("{e:#}"), "reading catalogue edits failed; trying again");
            }
            // After the catalogue, so that a zone naming an outlet just added fits.
            if let Err(e) = reader.zones.refresh(&reader.catalogue.now()).await {
                tracing::warn!(error = %format!("{e:#}"), "reading zone edits failed; trying again");
            }
        }
    });
    // `grow` runs here only: the actors its rounds start live on this (the core's) thread,
    // not on an HTTP worker's, which stops with the server before the core drains.
    actix::spawn(async move {
        loop {
            // An outlet added before this task waited left a permit: nothing is missed.
            tokio::select! {
                _ = services.catalogue.outlet_added.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            if stop.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = services.grow().await {
                tracing::warn!(error = %format!("{e:#}"), "making room for an added outlet failed; trying again");
                services.catalogue.outlet_added.notify_one();
                tokio::time::sleep(every).await;
            }
        }
    });
}

/// The HTTP server over a core.
pub struct Application {
    port: u16,
    server: Server,
    core: Core,
    mqtt: Addr<MqttSession>,
}

/// Stops an application gracefully: live streams end, requests in flight finish, then
/// `run_until_stopped` drains the core.
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    hub: Arc<crate::hub::Hub>,
    reconciler: Addr<Reconciler>,
}

impl AppHandle {
    /// Runs a reconciler pass now (as the timer would) and returns its report.
    pub async fn reconcile(&self) -> anyhow::Result<PassReport> {
        self.reconciler
            .send(RunPass)
            .await
            .context("the reconciler stopped")?
            .map_err(|e| anyhow::anyhow!(e))
    }

    pub async fn stop(&self) {
        self.hub.close();
        self.server.stop(true).await;
    }
}

impl Application {
    /// Starts the core and binds `http.host:http.port` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let core = Core::start(settings).await?;
        let services = core.services.clone();
        let shared = &services.shared;
        let http = &services.settings.http;
        let listener = bind(&http.host, http.port, http.reuse_port)
            .with_context(|| format!("binding {}:{}", http.host, http.port))?;
        let port = listener.local_addr()?.port();
        // A port shared with other processes cannot reach this one in particular: forwarded
        // requests come to a port of its own.
        let own = if http.reuse_port {
            let own = TcpListener::bind((http.host.as_str(), 0));
            Some(own.context("binding a port of its own")?)
        } else {
            None
        };
        let own_port = match &own {
            Some(l) => l.local_addr()?.port(),
            None => port,
        };
        // Where the other processes forward requests for the outlets this one owns.
        let cluster = &services.settings.cluster;
        let advertised = if cluster.advertise_url.is_empty() {
            let host = match http.host.as_str() {
                "0.0.0.0" => "127.0.0.1".to_owned(),
                "::" => "[::1]".to_owned(),
                h if h.contains(':') => format!("[{h}]"),
                h => h.to_owned(),
            };
            format!("http://{host}:{own_port}")
        } else {
            cluster.advertise_url.trim_end_matches('/').to_owned()
        };
        shared
            .store
            .advertise(&cluster.node_id, &advertised)
            .await?;
        shared.owners.advertise(advertised);
        crate::checkout::reroute::start_sweep(services.clone());
        let mqtt_status = Arc::new(MqttStatus::default());
        let mqtt = {
            let (services, status) = (services.clone(), mqtt_status.clone());
            Supervisor::start(move |_| MqttSession::new(services, status))
        };
        let prices = Arc::new(crate::end_of_day::Prices::load(
            &services.settings.reports.prices_file,
        )?);
        let state = web::Data::new(AppState {
            services: services.clone(),
            health: Health::new(shared.store.clone(), shared.ledger.clone(), mqtt_status),
            auth: web::Data::new(Auth::new(
                &services.settings.api_keys,
                &services.settings.rate_limits,
                shared.metrics.clone(),
            )?),
            whatsapp: crate::whatsapp::start(services.clone()),
            exports: Arc::new(tokio::sync::Semaphore::new(crate::http::EXPORTS_MAX)),
            prices,
            forecasts: Arc::new(crate::kitchen::Forecasts::default()),
        });
        let write_deadline = Duration::from_secs(http.write_deadline_secs);
        let mut server = HttpServer::new(move || crate::http::app(state.clone()))
            .on_connect(move |conn, _| {
                // The write deadline of every connection (see http.write_deadline_secs).
                if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                    let socket = socket2::SockRef::from(tcp);
                    if let Err(e) = socket.set_tcp_user_timeout(Some(write_deadline)) {
                        tracing::debug!(error = %e, "setting TCP_USER_TIMEOUT failed");
                    }
                }
            })
            .listen(listener)?;
        if let Some(own) = own {
            server = server.listen(own)?;
        }
        let server = server
            .workers(http.workers)
            .shutdown_timeout(http.shutdown_timeout_secs)
            // Our own signal handling: live streams must end before the graceful wait.
            .disable_signals()
            .run();
        let handle = AppHandle {
            server: server.handle(),
            hub: shared.hub.clone(),
            reconciler: core.reconciler.clone(),
        };
        actix_web::rt::spawn(async move {
            stop_signal().await;
            info!("stop signal: shutting down gracefully");
            handle.stop().await;
        });
        info!(port, own_port, "listening");
        Ok(Self {
            port,
            server,
            core,
            mqtt,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            hub: self.core.services.shared.hub.clone(),
            reconciler: self.core.reconciler.clone(),
        }
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM or `handle().stop()`), then shuts
    /// the core down gracefully.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await.context("HTTP server")?;
        // POS messages in flight stay unacknowledged: the broker redelivers them next time.
        let _ = self.mqtt.send(Disconnect).await;
        self.core.shutdown().await
    }
}

/// A listening socket on `host:port`, shared with other processes when `reuse_port`.
fn bind(host: &str, port: u16, reuse_port: bool) -> anyhow::Result<TcpListener> {
    if !reuse_port {
        return Ok(TcpListener::bind((host, port))?);
    }
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .context("no address")?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
