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
        .insert_header(("Content-Security-Policy", csp()))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(PAGE)
}

const PAGE: &str = include_str!("dashboard.html");

/// The page's Content-Security-Policy: its one inline script and its one style block by
/// their SHA-256, requests to its own origin only, no frames, no forms, no base.
fn csp() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        let inner = |open: &str, close: &str| {
            let start = PAGE.find(open).expect("the page has it") + open.len();
            let end = start + PAGE[start..].find(close).expect("closed");
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&PAGE.as_bytes()[start..end]);
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
    })
}
