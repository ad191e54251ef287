//! The HTTP link, where a site may not open MQTT: each pending event is a `POST
//! /v1/movements` with the outlet's `pos` key and the same event id, at most
//! `forward.window` at once. shelfsync answers a movement once it is durable, and answers a
//! repeat with the first answer, so the answer is the ack:
//!
//! - `201`/`200`: applied (at the answer's `seq`);
//! - any other `4xx` but those below (`409`, `413`, `422`, ...): rejected for good (the body
//!   says why), kept for the operator;
//! - `401`, `403`: this agent's key or outlet is wrong: logged loudly, the sale stays pending;
//! - `408`, `429`, `5xx`, a timeout, no connection: the sale stays pending and the round is
//!   tried again after a capped, jittered backoff (at least `Retry-After`).
//!
//! The outlet's stock comes over shelfsync's SSE stream, resumed after a cut (`stream.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use serde::Deserialize;
use tracing::{error, warn};

use super::stream::follow as follow_stock;
use super::{write_stock, Backoff, LinkState, Outbox, StockInbox};
use crate::settings::Settings;
use crate::store::{blocking, Fate};

/// How often the sender looks for pending events when nothing wakes it.
const SENDER_TICK: Duration = Duration::from_secs(1);

/// What one `POST /v1/movements` came to.
enum Answer {
    Settled(Fate),
    /// Not decided: try again later, not before this long.
    Later(Option<Duration>),
}

#[derive(Deserialize)]
struct Applied {
    seq: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
}

fn client(settings: &Settings) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(settings.mqtt.connect_timeout_secs))
        .timeout(Duration::from_secs(settings.shelfsync.request_timeout_secs))
        .pool_max_idle_per_host(settings.forward.window)
        .build()
        .expect("an HTTP client")
}

/// Runs the link until the process ends.
pub async fn run(settings: Settings, outbox: Arc<Outbox>, link: Arc<LinkState>) {
    let http = client(&settings);
    let stock = Arc::new(StockInbox::new(outbox.metrics.clone()));
    tokio::spawn(write_stock(stock.clone(), outbox.store.clone()));
    tokio::spawn(follow_stock(settings.clone(), stock, link.clone()));
    let f = &settings.forward;
    let mut backoff = Backoff::new(f.retry_delay_min_ms, f.retry_delay_max_ms);
    let url = format!(
        "{}/v1/movements",
        settings.shelfsync.url.trim_end_matches('/')
    );
    let key = settings.shelfsync.api_key.clone().expect("checked at load");
    let to = Target {
        http: &http,
        url: &url,
        key: key.expose(),
        outlet: settings.outlet.as_str(),
        link: &link,
    };
    // The lines the last round left undecided: sent again, not first.
    let mut undecided = HashSet::new();
    loop {
        // Each round takes the oldest pending lines and ends with each decided or not, so
        // nothing is in flight between rounds.
        let window = settings.forward.window;
        let batch = match blocking(&outbox.store, move |s| s.pending_after(0, window)).await {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "reading pending events failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = outbox.wake.notified() => {}
                _ = tokio::time::sleep(SENDER_TICK) => {}
            }
            continue;
        }
        let resent = batch
            .iter()
            .filter(|p| undecided.contains(&p.event_id))
            .count();
        let sent = &outbox.metrics.sent;
        sent.with_label_values(&["resend"]).inc_by(resent as u64);
        sent.with_label_values(&["first"])
            .inc_by((batch.len() - resent) as u64);
        let answers: Vec<(String, Answer)> = stream::iter(batch)
            .map(|p| {
                let to = &to;
                async move { (p.event_id, to.post(&p.payload).await) }
            })
            .buffer_unordered(window)
            .collect()
            .await;
        undecided.clear();
        let mut fates = Vec::new();
        let mut wait_at_least = None;
        for (event_id, answer) in answers {
            match answer {
                Answer::Settled(fate) => fates.push((event_id, fate)),
                Answer::Later(after) => {
                    wait_at_least = wait_at_least.max(Some(after.unwrap_or_default()));
                    undecided.insert(event_id);
                }
            }
        }
        if let Err(e) = outbox.settle(fates).await {
            error!(error = %format!("{e:#}"), "settling answers in the store failed; the events are sent again");
        }
        match wait_at_least {
            // At least what shelfsync asked for (`Retry-After`), then the backoff.
            Some(after) => {
                tokio::time::sleep(after).await;
                backoff.wait().await;
            }
            None => backoff.reset(),
        }
    }
}

/// Where and as whom movements are posted.
struct Target<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
    key: &'a str,
    outlet: &'a str,
    link: &'a LinkState,
}

impl Target<'_> {
    /// Posts one stored line (the POS message with `outlet` added) and reads what it came to.
    async fn post(&self, payload: &str) -> Answer {
        let mut body: serde_json::Value =
            serde_json::from_str(payload).expect("the store keeps JSON");
        body["outlet"] = self.outlet.into();
        let sent = self.http.post(self.url).bearer_auth(self.key).json(&body);
        match sent.send().await {
            Ok(res) => {
                self.link.set(true);
                answer(res).await
            }
            Err(e) => {
                self.link.set(false);
                warn!(error = %e, "shelfsync did not answer; the sale stays pending");
                Answer::Later(None)
            }
        }
    }
}

/// What shelfsync's answer to one line says.
async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status().as_u16();
    let retry_after = (res.headers().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)));
    let text = res.text().await.unwrap_or_default();
    match status {
        200 | 201 => {
            let seq = serde_json::from_str::<Applied>(&text)
                .ok()
                .and_then(|a| a.seq);
            Answer::Settled(Fate::Applied { seq })
        }
        401 | 403 => {
            error!(status, body = %text, "shelfsync refused this agent's key for its outlet: check shelfsync.api_key and outlet; the sale stays pending");
            Answer::Later(retry_after)
        }
        408 | 429 => Answer::Later(retry_after),
        400..=499 => {
            let e: ErrorBody = serde_json::from_str(&text).unwrap_or(ErrorBody {
                error: None,
                message: None,
            });
            Answer::Settled(Fate::Rejected {
                code: e.error.unwrap_or_else(|| status.to_string()),
                reason: e.message.unwrap_or(text),
            })
        }
        _ => Answer::Later(retry_after),
    }
}
