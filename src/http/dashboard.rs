//! The pages: `GET /` the operations dashboard, `GET /kitchen` the kitchen plan, `GET
//! /war-room` the war-room screen. Each is one self-contained page (no CDN: the machine that
//! shows it may be offline; charts are drawn in the page). They hold no data: every call
//! they make carries a key.

use std::sync::OnceLock;

use actix_web::HttpResponse;

/// The operations dashboard (a self-contained page; every call it makes carries a key).
#[utoipa::path(get, path = "/", tag = "operations", operation_id = "dashboard",
    responses((status = 200, description = "The page", content_type = "text/html; charset=utf-8", body = String)))]
pub async fn page() -> HttpResponse {
    static CSP: OnceLock<String> = OnceLock::new();
    html(PAGE, &CSP)
}

/// The kitchen plan beside the head cook's numbers, which he can enter there.
#[utoipa::path(get, path = "/kitchen", tag = "operations", operation_id = "kitchen_page",
    responses((status = 200, description = "The page", content_type = "text/html; charset=utf-8", body = String)))]
pub async fn kitchen() -> HttpResponse {
    static CSP: OnceLock<String> = OnceLock::new();
    html(KITCHEN, &CSP)
}

/// The war-room screen: POS links, sales per minute, the sell-out list, holds at risk,
/// ledger lag and drift, refreshed every few seconds.
#[utoipa::path(get, path = "/war-room", tag = "operations", operation_id = "war_room_page",
    responses((status = 200, description = "The page", content_type = "text/html; charset=utf-8", body = String)))]
pub async fn war_room() -> HttpResponse {
    static CSP: OnceLock<String> = OnceLock::new();
    html(WAR_ROOM, &CSP)
}

const PAGE: &str = include_str!("dashboard.html");
const KITCHEN: &str = include_str!("kitchen.html");
const WAR_ROOM: &str = include_str!("war_room.html");

fn html(page: &'static str, csp: &'static OnceLock<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header((
            "Content-Security-Policy",
            csp.get_or_init(|| policy(page)).as_str(),
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(page)
}

/// A page's Content-Security-Policy: its one inline script and its one style block by their
/// SHA-256, requests to its own origin only, no frames, no forms, no base.
fn policy(page: &str) -> String {
    let inner = |open: &str, close: &str| {
        let start = page.find(open).expect("the page has it") + open.len();
        let end = start + page[start..].find(close).expect("closed");
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&page.as_bytes()[start..end]);
        use base64::Engine;
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inner("<script>", "</script>"),
        inner("<style>", "</style>")
    )
}
