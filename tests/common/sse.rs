//! The live stream's client (on the shared parser of `shelfsync_load::sse`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::TestApp;

/// The longest line a test stream may send (a snapshot of the whole demo catalogue fits).
const LINE_MAX: usize = 16 << 20;

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: Value,
}

/// A live SSE client collecting events in the background.
pub struct SseClient {
    rx: tokio::sync::mpsc::UnboundedReceiver<Sse>,
}

impl SseClient {
    /// Connects to `/v1/stream?{query}` with `key` and waits for the response head.
    pub async fn connect(app: &TestApp, query: &str, key: &str) -> Result<Self, StatusCode> {
        Self::connect_to(&app.http, &app.url, query, key).await
    }

    /// Connects to the service at `url` (another process than a `TestApp`).
    pub async fn connect_to(
        http: &reqwest::Client,
        url: &str,
        query: &str,
        key: &str,
    ) -> Result<Self, StatusCode> {
        let res = http
            .get(format!("{url}/v1/stream?{query}"))
            .bearer_auth(key)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        if res.status() != StatusCode::OK {
            return Err(res.status());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(shelfsync_load::sse::read(res, LINE_MAX, move |e, _| {
            let data = serde_json::from_str(&e.data).unwrap_or(Value::Null);
            tx.send(Sse {
                event: e.event,
                data,
            })
            .is_ok()
        }));
        Ok(Self { rx })
    }

    /// The next event, waiting at most `secs`.
    pub async fn next(&mut self, secs: u64) -> Option<Sse> {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A stalled SSE reader: a tiny receive window, a request for `/v1/stream?{query}` with
/// `key`, and never a read (hold it to keep the connection).
pub async fn stalled_sse(app: &TestApp, query: &str, key: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let addr: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/stream?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, request.as_bytes())
        .await
        .unwrap();
    stalled
}
