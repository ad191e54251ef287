//! The WebSocket test client on `/v1/ws`.

use std::time::Duration;

use futures_util::StreamExt;

use super::TestApp;

pub type WsConn = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// Connects to `/v1/ws?{query}`.
pub async fn ws_connect(app: &TestApp, query: &str) -> WsConn {
    let (_, conn) = awc::Client::new()
        .ws(format!(
            "{}/v1/ws?{query}",
            app.url.replace("http://", "ws://")
        ))
        .connect()
        .await
        .expect("websocket connects");
    conn
}

/// The next text frame, as JSON (within 5 s).
pub async fn ws_next(conn: &mut WsConn) -> serde_json::Value {
    ws_next_within(conn, Duration::from_secs(5))
        .await
        .expect("a frame in time")
}

/// The next text frame, as JSON, or `None` when none comes within `wait`.
pub async fn ws_next_within(conn: &mut WsConn, wait: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, conn.next()).await.ok()?;
        if let awc::ws::Frame::Text(bytes) = frame.expect("open").unwrap() {
            return Some(serde_json::from_slice(&bytes).unwrap());
        }
    }
}
