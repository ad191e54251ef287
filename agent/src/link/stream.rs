//! The outlet's stock over shelfsync's SSE stream, for the HTTP link: one snapshot, then each
//! change, and after a cut only what was missed (`Last-Event-ID`; the service answers a
//! `resumed` event and the latest value of each SKU that changed, or a snapshot when it no
//! longer holds them). Polling the outlet's whole stock instead would cost a 6,400-SKU outlet
//! about 700 KB a read, more than a 256 kbit/s link carries in 15 s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tracing::{info, warn};

use super::{Backoff, LinkState, StockInbox};
use crate::settings::Settings;
use crate::sse::Parser;
use crate::store::StockValue;
use shelfsync::domain::{now_ms, rfc3339_ms};

/// The longest line (or event's data) the stream may send: a snapshot of a 6,400-SKU outlet
/// is about 700 KB on one line.
const LINE_MAX: usize = 16 << 20;

/// A stock row as the stream sends it.
#[derive(Deserialize)]
struct Row {
    sku: String,
    on_hand: i64,
    reserved: i64,
    available: i64,
    seq: i64,
}

impl Row {
    fn value(self, at: &str) -> StockValue {
        StockValue {
            sku: self.sku,
            on_hand: self.on_hand,
            reserved: self.reserved,
            available: self.available,
            seq: self.seq,
            at: at.to_owned(),
        }
    }
}

/// Follows the outlet's stock stream until the process ends, reconnecting (with its last
/// event id) whenever it fails or falls silent past `shelfsync.stream_silence_secs`.
pub async fn follow(settings: Settings, inbox: Arc<StockInbox>, link: Arc<LinkState>) {
    let s = &settings.shelfsync;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(settings.mqtt.connect_timeout_secs))
        .build()
        .expect("an HTTP client");
    let url = format!("{}/v1/stream", s.url.trim_end_matches('/'));
    let key = s.api_key.clone().expect("checked at load");
    let silence = Duration::from_secs(s.stream_silence_secs);
    let f = &settings.forward;
    let mut backoff = Backoff::new(f.retry_delay_min_ms, f.retry_delay_max_ms);
    let mut last_id: Option<String> = None;
    loop {
        let mut req = (http.get(&url))
            .query(&[("outlets", settings.outlet.as_str())])
            .bearer_auth(key.expose());
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = match tokio::time::timeout(silence, req.send()).await {
            Ok(Ok(res)) if res.status().is_success() => res,
            Ok(Ok(res)) => {
                warn!(
                    status = res.status().as_u16(),
                    "the stock stream was refused"
                );
                backoff.wait().await;
                continue;
            }
            _ => {
                link.set(false);
                backoff.wait().await;
                continue;
            }
        };
        link.set(true);
        backoff.reset();
        let mut parser = Parser::new(LINE_MAX);
        let mut body = res.bytes_stream();
        loop {
            let chunk = match tokio::time::timeout(silence, body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => {
                    warn!(error = %e, "the stock stream broke; resuming");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        secs = silence.as_secs(),
                        "the stock stream fell silent; resuming"
                    );
                    link.set(false);
                    break;
                }
            };
            link.heard();
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(e) => {
                    warn!(error = %e, "the stock stream sent what it may not; starting over");
                    last_id = None;
                    break;
                }
            };
            let at = rfc3339_ms(now_ms());
            for e in events {
                match e.event.as_str() {
                    "snapshot" => match serde_json::from_str::<Vec<Row>>(&e.data) {
                        Ok(rows) => {
                            info!(values = rows.len(), "stock snapshot received");
                            rows.into_iter().for_each(|r| inbox.put(r.value(&at)));
                        }
                        Err(e) => warn!(error = %e, "a snapshot that is not stock rows"),
                    },
                    "stock" => {
                        if let Ok(row) = serde_json::from_str::<Row>(&e.data) {
                            inbox.put(row.value(&at));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(id) = parser.last_event_id() {
                last_id = Some(id.to_owned());
            }
        }
        backoff.wait().await;
    }
}
