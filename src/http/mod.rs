//! The HTTP API of API.md: one file per resource. Handlers parse and authorize at the edge,
//! call the core (`checkout`, `movements`, `zones`, the WhatsApp inbox) and render its answer;
//! they never message an outlet actor or touch Redis or MongoDB.

mod alerts;
pub mod auth;
mod bulk;
mod context;
mod dashboard;
mod export;
mod kitchen;
pub use export::EXPORTS_MAX;
pub mod error;
pub mod forward;
mod ledger;
mod movements;
pub mod openapi;
mod ops;
mod outlets;
mod reports;
mod reservations;
mod skus;
mod stock;
mod stream;
mod war_room;
pub mod whatsapp;
mod ws;
mod zones;

use std::time::Instant;

use actix_web::dev::Service;
use actix_web::{web, HttpResponse};

use crate::domain::Invalid;
use error::ApiError;
use openapi::SecuritySchemes;

pub use context::AppState;

/// The route table: one line per route, expanded into the actix registration ([`routes`]),
/// the list of routes ([`ROUTES`]) and the OpenAPI document ([`ApiDoc`], served at
/// `/openapi.json`), so that none of them can leave a route out. Every handler named here must
/// carry a `#[utoipa::path]` (it does not compile otherwise); `tests/openapi.rs` checks that
/// its method and path are the ones of its line.
macro_rules! route_table {
    ($($method:ident $path:literal => $module:ident :: $handler:ident,)+) => {
        /// Every route, as `(METHOD, full path)` in actix's `{param}` syntax.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),+];

        pub fn routes(cfg: &mut web::ServiceConfig) {
            $(cfg.route(
                $path,
                web::method(actix_web::http::Method::$method).to($module::$handler),
            );)+
            cfg.default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::not_found("no such route"))
            }));
        }

        /// The OpenAPI 3 document of every route in [`ROUTES`].
        #[derive(utoipa::OpenApi)]
        #[openapi(
            paths($($module::$handler),+),
            modifiers(&SecuritySchemes),
            tags(
                (name = "stock", description = "Outlets, stock and cart availability"),
                (name = "reservations", description = "The checkout path: hold, read, confirm, cancel"),
                (name = "movements", description = "Outlet operations and the ledger"),
                (name = "zones", description = "Delivery zones by PIN code"),
                (name = "catalogue", description = "SKUs (names, categories, shelf life, status) and outlets: edits while running"),
                (name = "streams", description = "Live stock: Server-Sent Events and WebSocket"),
                (name = "whatsapp", description = "The WhatsApp Cloud API webhook"),
                (name = "operations", description = "Health, readiness, metrics, the dashboard, this document"),
            )
        )]
        pub struct ApiDoc;
    };
}

route_table! {
    GET "/" => dashboard::page,
    GET "/kitchen" => dashboard::kitchen,
    GET "/war-room" => dashboard::war_room,
    GET "/healthz" => ops::healthz,
    GET "/readyz" => ops::readyz,
    GET "/metrics" => ops::metrics,
    GET "/openapi.json" => openapi::openapi_json,
    GET "/v1/outlets" => stock::list_outlets,
    GET "/v1/outlets/{outlet}" => outlets::get,
    PUT "/v1/outlets/{outlet}" => outlets::put,
    GET "/v1/outlets/{outlet}/stock" => stock::outlet_stock,
    GET "/v1/outlets/{outlet}/stock/{sku}" => stock::sku_stock,
    POST "/v1/availability" => stock::availability,
    GET "/v1/webhooks/whatsapp" => whatsapp::verify,
    POST "/v1/webhooks/whatsapp" => whatsapp::receive,
    GET "/v1/skus" => skus::list,
    GET "/v1/skus/{sku}" => skus::get,
    PUT "/v1/skus/{sku}" => skus::put,
    GET "/v1/zones" => zones::list,
    GET "/v1/zones/{pin}" => zones::get,
    PUT "/v1/zones/{pin}" => zones::put,
    POST "/v1/reservations" => reservations::create,
    GET "/v1/reservations/{id}" => reservations::get,
    POST "/v1/reservations/{id}/confirm" => reservations::confirm,
    POST "/v1/reservations/{id}/cancel" => reservations::cancel,
    POST "/v1/movements" => movements::create,
    POST "/v1/movements/bulk" => bulk::create,
    GET "/v1/ledger" => ledger::page,
    GET "/v1/ledger/lag" => ledger::lag,
    GET "/v1/export/ledger" => export::ledger,
    GET "/v1/export/stock" => export::stock,
    GET "/v1/export/drift" => export::drift,
    GET "/v1/export/reservations" => export::reservations,
    GET "/v1/reports/end-of-day" => reports::end_of_day,
    GET "/v1/alerts" => alerts::list,
    GET "/v1/kitchen/plan" => kitchen::plan,
    PUT "/v1/kitchen/plan/{outlet}/{sku}" => kitchen::put_cook,
    GET "/v1/war-room" => war_room::get,
    GET "/v1/stream" => stream::stream,
    GET "/v1/ws" => ws::ws,
}

/// Builds the actix `App` for one worker: routes, state, request metrics.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.shared.metrics.clone();
    let auth = state.auth.clone();
    let address_auth = state.auth.clone();
    // The owner of an outlet may wait for the ledger before it answers a confirm.
    let forward_timeout =
        std::time::Duration::from_secs(state.settings.ledger.durable_wait_secs + 5);
    actix_web::App::new()
        .app_data(state)
        .app_data(auth)
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::from(Invalid::new("query", e.to_string())).into()),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| ApiError::not_found(e.to_string()).into()),
        )
        .configure(routes)
        .wrap(forward::Forwarding::new(forward_timeout))
        .wrap_fn(move |req, srv| {
            // A request that names no key at all is charged to its client address here (one
            // that names an unknown key, when its key is looked up).
            let keyless = auth::bearer(req.request()).is_none()
                && !(req.query_string().split('&')).any(|p| p.split('=').next() == Some("key"));
            let refused = keyless
                .then(|| address_auth.charge_address(auth::peer(req.request())).err())
                .flatten();
            match refused {
                Some(e) => {
                    let res = req.error_response(e);
                    futures_util::future::Either::Left(futures_util::future::ready(Ok(res)))
                }
                None => futures_util::future::Either::Right(srv.call(req)),
            }
        })
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            // A bounded label set: a made-up method is `other`, an unmatched path `unmatched`.
            let method = match req.method().as_str() {
                m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
                _ => "other",
            }
            .to_owned();
            let metrics = metrics.clone();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                let route = res
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into());
                metrics
                    .http_seconds
                    .with_label_values(&[method.as_str(), route.as_str(), res.status().as_str()])
                    .observe(started.elapsed().as_secs_f64());
                Ok(res)
            }
        })
}
