//! `GET /`: the operations dashboard. One self-contained page (no CDN: the machine that
//! shows it may be offline). It holds no data: every call it makes carries a key.

use actix_web::HttpResponse;

/// The operations dashboard (a self-contained page; every call it makes carries a key).
#[utoipa::path(get, path = "/", tag = "operations", operation_id = "dashboard",
    responses((status = 200, description = "The page", content_type = "text/html; charset=utf-8", body = String)))]
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(include_str!("dashboard.html"))
}
